"""The Kubernetes manifests in deploy/kubernetes: every variable they set is a real setting and the whole
environment passes the settings' checks, the probes ask routes the API serves on the port it listens on,
each pod advertises its stable DNS name, secrets stay in the Secret, and the resources and probe timings
cover what was measured."""

from __future__ import annotations

import re
from dataclasses import fields
from typing import Any

import yaml

from pipeline.config.fields import Fields
from pipeline.config.secret import Secret
from pipeline.config.settings import Settings
from tests.support.promql import DEPLOY, ROOT

KUBERNETES = DEPLOY / "kubernetes"
# What the manifests must cover, measured, with where each figure comes from (docs/deploy.md repeats them)
MEASURED = {
    # peak RSS of one worker, MiB: 5,000,000 distinct IPs with the default near cache (docs/benchmarks.md,
    # "One RocksDB budget": burst, table filled, restart, Zipf pass; 91-94 MiB for the 200,000-event backlog)
    "peak_rss_mib": 243,
    # seconds from start to "worker ready" for two workers, topics created first
    # (tests/integration/deploy/test_prometheus_scrape.py prints it: 7.0 s)
    "start_s": 7.0,
    # seconds until a killed worker's table partitions have a new owner (pipeline/app.py, session timeout)
    "takeover_s": 15.6,
    # seconds a SIGTERM stop takes (docs/testing.md, rolling restarts: 1.4-2.3 s)
    "stop_s": 2.3,
}
HELPERS = {"POD_NAME", "POD_NAMESPACE"}  # set from the pod's fields only to build other values
SETTINGS = {f.metadata["env"] for f in fields(Fields)}
SECRETS = {f.metadata["env"] for f in fields(Fields) if "Secret" in str(f.type)}
MIB = {"Mi": 1, "Gi": 1024}


def manifests() -> dict[str, dict[str, Any]]:
    """kind -> the one object of that kind (each file holds one)."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["kind"] not in found, f"two {doc['kind']}s"
            found[doc["kind"]] = doc
    return found


def container() -> dict[str, Any]:
    return dict(manifests()["StatefulSet"]["spec"]["template"]["spec"]["containers"][0])


def pod_env(pod: str = "geo-pipeline-0", namespace: str = "geo") -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom, then env with $(VAR) expanded."""
    m = manifests()
    env = {**m["ConfigMap"]["data"], **m["Secret"]["stringData"]}
    fields_ = {"metadata.name": pod, "metadata.namespace": namespace}
    for item in container()["env"]:
        if "valueFrom" in item:
            env[item["name"]] = fields_[item["valueFrom"]["fieldRef"]["fieldPath"]]
        else:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], item["value"])
    return env


def mib(quantity: str) -> float:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * MIB[unit]


def test_every_variable_is_a_real_setting_and_the_environment_passes_the_checks() -> None:
    """Each variable the ConfigMap, the Secret and the container set is a setting's `env` name, and
    Settings.from_env accepts the whole environment (parsers and checks.py)."""
    env = pod_env()
    assert set(env) - HELPERS <= SETTINGS, set(env) - HELPERS - SETTINGS
    settings = Settings.from_env(env)
    assert settings.web_host == "0.0.0.0" and settings.worker_name == "geo-pipeline-0"
    assert str(settings.data_dir) == container()["volumeMounts"][0]["mountPath"]


def test_the_secret_holds_the_api_key_and_kafka_credentials_and_nothing_else_does() -> None:
    """GEO_IPAPI_KEY and the Kafka user and password are in the Secret; no secret setting is in the
    ConfigMap or written into the container spec."""
    m = manifests()
    secret = set(m["Secret"]["stringData"])
    assert {"GEO_IPAPI_KEY", "GEO_KAFKA_SASL_USERNAME", "GEO_KAFKA_SASL_PASSWORD"} <= secret
    assert not SECRETS & (set(m["ConfigMap"]["data"]) | {e["name"] for e in container()["env"]})
    assert {"GEO_IPAPI_KEY", "GEO_KAFKA_SASL_PASSWORD"} <= SECRETS  # this test's notion of a secret holds
    assert isinstance(Settings.from_env(pod_env()).kafka_sasl_password, Secret)


def test_probes_ask_served_routes_on_the_port_the_api_listens_on() -> None:
    """Liveness and startup ask /health, readiness /ready; both are routes of pipeline/web/server.py, and
    the probes' port is the container port, the Service's target and GEO_WEB_PORT."""
    routes = set(re.findall(r'add_get\("([^"]+)"', (ROOT / "pipeline/web/server.py").read_text()))
    c = container()
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    probes = {kind: c[kind]["httpGet"] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startupProbe": "/health",
        "livenessProbe": "/health",
        "readinessProbe": "/ready",
    }
    assert {p["path"] for p in probes.values()} <= routes
    assert {ports[p["port"]] for p in probes.values()} == {int(pod_env()["GEO_WEB_PORT"])}
    service_port = manifests()["Service"]["spec"]["ports"][0]
    assert ports[service_port["targetPort"]] == service_port["port"] == int(pod_env()["GEO_WEB_PORT"])


def test_each_pod_advertises_its_stable_name_through_the_headless_service() -> None:
    """A headless Service (publishing not-ready pods) named as the StatefulSet's serviceName; each pod's
    GEO_ADVERTISED_URL is its own DNS name under it, and its worker name is the pod's."""
    m = manifests()
    service, sts = m["Service"], m["StatefulSet"]
    assert service["spec"]["clusterIP"] == "None" and service["spec"]["publishNotReadyAddresses"] is True
    assert sts["spec"]["serviceName"] == service["metadata"]["name"]
    pod_labels = sts["spec"]["template"]["metadata"]["labels"]
    for selector in (
        service["spec"]["selector"],
        m["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= pod_labels.items()
    for n in (0, 2):
        env = pod_env(f"geo-pipeline-{n}", "prod")
        expected = f"http://geo-pipeline-{n}.geo-pipeline.prod.svc.cluster.local:6066"
        assert env["GEO_ADVERTISED_URL"] == expected and env["GEO_WORKER_NAME"] == f"geo-pipeline-{n}"


def test_a_volume_per_pod_for_rocksdb() -> None:
    """The data directory is a volumeClaimTemplate (one volume per pod, never shared)."""
    sts = manifests()["StatefulSet"]["spec"]
    claims = {t["metadata"]["name"] for t in sts["volumeClaimTemplates"]}
    assert {v["name"] for v in container()["volumeMounts"]} <= claims
    assert "volumes" not in sts["template"]["spec"]


def test_resources_cover_the_measured_peak_memory() -> None:
    """The memory request is at least the measured peak RSS, the limit above the request."""
    resources = container()["resources"]
    request, limit = mib(resources["requests"]["memory"]), mib(resources["limits"]["memory"])
    assert request >= MEASURED["peak_rss_mib"] and limit >= request * 1.2
    assert "cpu" not in resources["limits"]  # a CPU limit throttles the hot path's bursts


def test_probe_timings_fit_the_measured_start_takeover_and_stop() -> None:
    """The startup probe allows several measured starts, readiness notices a lost assignment within about a
    takeover, liveness tolerates a minute of a busy loop, and the grace period covers a stop many times."""
    c = container()

    def window(kind: str) -> float:
        return float(c[kind]["periodSeconds"] * c[kind]["failureThreshold"])

    assert window("startupProbe") >= 4 * MEASURED["start_s"]
    assert window("readinessProbe") <= MEASURED["takeover_s"]
    assert window("livenessProbe") >= 60
    grace = manifests()["StatefulSet"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 10 * MEASURED["stop_s"]


def test_the_kustomization_lists_every_manifest_but_the_strimzi_user() -> None:
    """`kubectl apply -k deploy/kubernetes` applies every manifest; the KafkaUser needs Strimzi, so it is
    applied on its own."""
    listed = set(yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml", "kafka-user.yaml"}
    assert listed == present


def test_manifest_numbers_match_the_measured_figures_in_the_docs() -> None:
    """The measured peak RSS the test checks is the one docs/deploy.md states."""
    text = (ROOT / "docs" / "deploy.md").read_text()
    assert f"{MEASURED['peak_rss_mib']} MiB" in text
