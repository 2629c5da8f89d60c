"""The local broker's generated config: the default stays PLAINTEXT only, sasl_users add one SASL listener."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.devtools.broker import LocalKafka, _add_scram_args, _server_properties
from pipeline.devtools.tls import TlsFiles
from pipeline.errors import BrokerError


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines())


def test_default_broker_has_no_sasl_listener() -> None:
    """Without sasl_users the config is the plain PLAINTEXT + CONTROLLER one the rest of the suite uses."""
    values = props(_server_properties(9092, 9093, Path("/d")))
    assert values["listeners"] == "PLAINTEXT://127.0.0.1:9092,CONTROLLER://127.0.0.1:9093"
    assert not [k for k in values if "sasl" in k]
    assert _add_scram_args({}) == []


def test_sasl_users_add_a_sasl_plaintext_listener_for_plain_and_scram() -> None:
    """sasl_users add SASL_PLAINTEXT beside PLAINTEXT (still inter-broker), PLAIN users in its JAAS config
    and SCRAM users as format arguments for both SCRAM mechanisms."""
    values = props(_server_properties(9092, 9093, Path("/d"), 9094, {"alice": "pw-1"}))
    assert values["advertised.listeners"] == "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094"
    assert values["inter.broker.listener.name"] == "PLAINTEXT"
    assert (
        values["listener.name.sasl_plaintext.sasl.enabled.mechanisms"] == "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"
    )
    assert 'user_alice="pw-1"' in values["listener.name.sasl_plaintext.plain.sasl.jaas.config"]
    assert _add_scram_args({"alice": "pw-1"}) == [
        "--add-scram",
        "SCRAM-SHA-256=[name=alice,password=pw-1]",
        "--add-scram",
        "SCRAM-SHA-512=[name=alice,password=pw-1]",
    ]


@pytest.mark.parametrize("user", [{"al ice": "pw"}, {"alice": 'p"w'}, {"alice": "p,w]"}])
def test_user_names_and_passwords_that_would_need_quoting_are_refused(
    user: dict[str, str], tmp_path: Path
) -> None:
    """A name or password that JAAS or --add-scram would misread is a BrokerError before anything starts."""
    with pytest.raises(BrokerError, match="may only use"):
        LocalKafka(tmp_path, sasl_users=user)


def test_running_reports_the_sasl_listener_from_the_pid_file(tmp_path: Path) -> None:
    """A run dir's pid file carries the SASL address, so `running()` reports it like the plain one."""
    (tmp_path / "broker.pid").write_text(f"{os.getpid()} 127.0.0.1:1 127.0.0.1:2\n")
    info = LocalKafka(tmp_path).running()
    assert info is not None and (info.bootstrap, info.sasl_bootstrap) == ("127.0.0.1:1", "127.0.0.1:2")
    (tmp_path / "broker.pid").write_text(f"{os.getpid()} 127.0.0.1:1\n")
    info = LocalKafka(tmp_path).running()
    assert info is not None and info.sasl_bootstrap is None


def test_tls_adds_ssl_and_sasl_ssl_listeners_advertised_by_the_certificates_name() -> None:
    """With TLS material the broker adds SSL (client certificates required) and SASL_SSL (SASL users, no
    client certificate) listeners, bound to 127.0.0.1 and advertised as `localhost`, the name the broker's
    certificate holds; PLAINTEXT stays the inter-broker listener."""
    tls = TlsFiles(Path("/t"))
    text = _server_properties(9092, 9093, Path("/d"), 9094, {"alice": "pw-1"}, tls=tls, ssl_port=9095,
                              sasl_ssl_port=9096)  # fmt: skip
    values = props(text)
    assert values["listeners"] == (
        "PLAINTEXT://127.0.0.1:9092,SASL_PLAINTEXT://127.0.0.1:9094,SSL://127.0.0.1:9095,"
        "SASL_SSL://127.0.0.1:9096,CONTROLLER://127.0.0.1:9093"
    )
    assert values["advertised.listeners"].endswith(",SSL://localhost:9095,SASL_SSL://localhost:9096")
    assert values["inter.broker.listener.name"] == "PLAINTEXT"
    assert values["listener.name.ssl.ssl.client.auth"] == "required"
    assert values["listener.name.sasl_ssl.ssl.client.auth"] == "none"
    assert values["listener.name.ssl.ssl.keystore.location"] == "/t/broker.p12"
    assert 'user_alice="pw-1"' in values["listener.name.sasl_ssl.plain.sasl.jaas.config"]
    assert "SSL:SSL" in values["listener.security.protocol.map"].split(",")
