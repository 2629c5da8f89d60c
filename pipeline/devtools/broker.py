"""A real single-node Apache Kafka (KRaft) broker for development, tests, benchmarks and the demo.

These machines have Java and Maven but no Docker, so the broker runs from Maven Central jars: fetched once
into a cache folder (later starts need no network), storage formatted with `kafka.tools.StorageTool`, and
`kafka.Kafka` started as a child process bound to 127.0.0.1. A run directory holds the config, data, log and
a pid file, so `geo-pipeline kafka start` in one shell and `stop` in another agree on what is running.

With `sasl_users` the broker also opens a SASL_PLAINTEXT listener (`BrokerInfo.sasl_bootstrap`) beside the
unauthenticated PLAINTEXT one, accepting those users with PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512: the
PLAIN users live in the listener's JAAS config, the SCRAM ones are written into the KRaft metadata when
the storage is formatted (`StorageTool format --add-scram`). It is a test fixture, not a secure setup: the
passwords sit in the run dir's server.properties and, for a moment, on the format command line, and a
restart on an already formatted run dir keeps the SCRAM users of the first start.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from pipeline.config.limits import SASL_MECHANISMS  # the SASL listener accepts every mechanism allowed
from pipeline.devtools.tls import TLS_HOST, TlsFiles, listener_properties, make_tls
from pipeline.errors import BrokerError

KAFKA_VERSION = "4.1.2"  # 4.1.x: the line aiokafka >= 0.13 negotiates with
LOG4J_VERSION = "2.25.3"  # the log4j2 version Kafka 4.1.2 builds against
SLF4J_VERSION = "1.7.36"  # Kafka 4.x stays on SLF4J 1.x, so the binding is log4j-slf4j-impl
HEAP = "-Xms256m -Xmx512m"  # bounded: without it the JVM takes a quarter of RAM
START_TIMEOUT = 90.0  # seconds; a cold JVM on 2 busy cores takes 5-15 s
STOP_TIMEOUT = 20.0  # seconds of SIGTERM before SIGKILL
SASL_LISTENER = "SASL_PLAINTEXT"
SSL_LISTENER = "SSL"  # with tls: clients must present a certificate signed by the test CA
SASL_SSL_LISTENER = "SASL_SSL"  # with tls and sasl_users: SASL users over TLS, no client certificate
_SIMPLE = re.compile(r"[A-Za-z0-9._-]+")  # user names and passwords need no quoting in JAAS or --add-scram

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>geo-pipeline</groupId><artifactId>kafka-jars</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>{slf4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J2 = """status = warn
appender.file.type = File
appender.file.name = file
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = WARN
"""


def default_cache_dir() -> Path:
    return Path.home() / ".cache" / "geo-pipeline" / f"kafka-{KAFKA_VERSION}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BrokerError(f"'{tool}' not found on PATH: install {package} (e.g. apt-get install {package})")
    return path


def fetch_jars(cache_dir: Path, *, progress: bool = True) -> Path:
    """Download Kafka and a logging backend through Maven once; return the folder of jars."""
    libs = cache_dir / "libs"
    marker = cache_dir / ".complete"
    if marker.exists():
        return libs
    mvn = _require("mvn", "maven")
    cache_dir.mkdir(parents=True, exist_ok=True)
    (cache_dir / "pom.xml").write_text(
        POM.format(kafka=KAFKA_VERSION, log4j=LOG4J_VERSION, slf4j=SLF4J_VERSION)
    )
    if progress:
        print(f"fetching Kafka {KAFKA_VERSION} jars through Maven into {libs} (once)...", flush=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(cache_dir / "pom.xml"),
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={libs}",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise BrokerError(f"Maven could not fetch the Kafka jars:\n{tail}")
    marker.write_text(f"{len(list(libs.glob('*.jar')))} jars\n")
    return libs


@dataclass(frozen=True)
class BrokerInfo:
    """Where a running broker listens and which process it is."""

    bootstrap: str
    pid: int
    run_dir: Path
    sasl_bootstrap: str | None = None  # the SASL_PLAINTEXT listener, when started with sasl_users
    ssl_bootstrap: str | None = None  # the SSL listener (client certificates required), with tls
    sasl_ssl_bootstrap: str | None = None  # the SASL_SSL listener, with tls and sasl_users
    tls: TlsFiles | None = None  # the CA, client certificates and the broker's stores, with tls


class LocalKafka:
    """Owns one broker process and its run directory."""

    def __init__(
        self,
        run_dir: Path,
        *,
        cache_dir: Path | None = None,
        port: int | None = None,
        sasl_users: Mapping[str, str] | None = None,
        tls: bool = False,
    ) -> None:
        self.run_dir = run_dir
        self.tls = tls  # SSL (and, with sasl_users, SASL_SSL) listeners, TLS material made at start
        self.cache_dir = cache_dir or default_cache_dir()
        self.port = port
        self.sasl_users = dict(sasl_users or {})  # {name: password}; empty: no SASL listener
        for name, password in self.sasl_users.items():
            if not (_SIMPLE.fullmatch(name) and _SIMPLE.fullmatch(password)):
                raise BrokerError(f"SASL user {name!r}: names and passwords may only use A-Z a-z 0-9 . _ -")
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "server.log"

    def running(self) -> BrokerInfo | None:
        """The broker this run dir started, if its process is still alive."""
        try:
            pid_text, bootstrap, *sasl = self.pid_file.read_text().split()
            pid = int(pid_text)
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return BrokerInfo(bootstrap, pid, self.run_dir, sasl[0] if sasl else None)

    def start(self, *, progress: bool = True) -> BrokerInfo:
        """Start the broker and wait until it answers; report an already running one instead of failing."""
        existing = self.running()
        if existing is not None:
            raise BrokerError(
                f"a broker is already running at {existing.bootstrap} (pid {existing.pid}); "
                "stop it with `geo-pipeline kafka stop`"
            )
        java = _require("java", "openjdk-17-jre-headless")
        libs = fetch_jars(self.cache_dir, progress=progress)
        started = time.monotonic()
        port = self.port or free_port()
        controller = free_port()
        sasl_port = free_port() if self.sasl_users else None
        data = self.run_dir / "data"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        tls = make_tls(self.run_dir / "tls") if self.tls else None
        ssl_port = free_port() if tls else None
        sasl_ssl_port = free_port() if tls and self.sasl_users else None
        props = self.run_dir / "server.properties"
        text = _server_properties(
            port, controller, data, sasl_port, self.sasl_users, tls=tls, ssl_port=ssl_port,
            sasl_ssl_port=sasl_ssl_port,
        )  # fmt: skip
        props.write_text(text)
        if self.sasl_users or tls:
            props.chmod(0o600)  # it holds the PLAIN passwords, the stores' password
        log4j = self.run_dir / "log4j2.properties"
        log4j.write_text(LOG4J2.format(log=self.log_file))
        classpath = f"{libs}/*"
        jvm = [java, *HEAP.split(), f"-Dlog4j2.configurationFile={log4j}", "-cp", classpath]
        cluster_id = _existing_cluster_id(data) or (
            base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=").replace("-", "A")
        )
        fmt = subprocess.run(
            [
                *jvm,
                "kafka.tools.StorageTool",
                "format",
                "-t",
                cluster_id,
                "-c",
                str(props),
                "--ignore-formatted",
                *_add_scram_args(self.sasl_users),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if fmt.returncode != 0:
            raise BrokerError(f"formatting Kafka storage failed: {fmt.stdout}{fmt.stderr}".strip())
        out = open(self.run_dir / "stdout.log", "wb")  # noqa: SIM115 - the child owns it for its lifetime
        self._proc = subprocess.Popen(
            [*jvm, "kafka.Kafka", str(props)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        bootstrap = f"127.0.0.1:{port}"
        sasl_bootstrap = f"127.0.0.1:{sasl_port}" if sasl_port else None
        sasl_field = f" {sasl_bootstrap}" if sasl_bootstrap else ""  # running() reads it back
        self.pid_file.write_text(f"{self._proc.pid} {bootstrap}{sasl_field}\n")
        try:
            _wait_ready(self._proc, port, self.log_file)
        except BaseException:
            self.stop()
            raise
        if progress:
            sasl_note = f", SASL on {sasl_bootstrap}" if sasl_bootstrap else ""
            print(
                f"kafka {KAFKA_VERSION} listening on {bootstrap}{sasl_note} (pid {self._proc.pid}, "
                f"started in {time.monotonic() - started:.1f}s, logs {self.log_file})",
                flush=True,
            )
        return BrokerInfo(
            bootstrap, self._proc.pid, self.run_dir, sasl_bootstrap,
            f"{TLS_HOST}:{ssl_port}" if ssl_port else None,
            f"{TLS_HOST}:{sasl_ssl_port}" if sasl_ssl_port else None,
            tls,
        )  # fmt: skip

    def stop(self) -> bool:
        """SIGTERM, then SIGKILL after a timeout; True when a broker was running."""
        info = self.running()
        if info is None:
            return False
        _terminate(info.pid, self._proc)
        self.pid_file.unlink(missing_ok=True)
        return True


def _existing_cluster_id(data: Path) -> str | None:
    """The cluster id of storage formatted by an earlier start: a restart keeps its topics and offsets."""
    try:
        text = (data / "meta.properties").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "cluster.id" and value.strip():
            return value.strip()
    return None


def _server_properties(
    port: int,
    controller: int,
    data: Path,
    sasl_port: int | None = None,
    sasl_users: Mapping[str, str] | None = None,
    *,
    tls: TlsFiles | None = None,
    ssl_port: int | None = None,
    sasl_ssl_port: int | None = None,
) -> str:
    # (name, bind host, advertised host, port) of every client listener; PLAINTEXT stays inter-broker
    listeners = [("PLAINTEXT", "127.0.0.1", "127.0.0.1", port)]
    if sasl_port is not None:
        listeners.append((SASL_LISTENER, "127.0.0.1", "127.0.0.1", sasl_port))
    if tls is not None and ssl_port is not None:
        listeners.append((SSL_LISTENER, "127.0.0.1", TLS_HOST, ssl_port))
    if tls is not None and sasl_ssl_port is not None:
        listeners.append((SASL_SSL_LISTENER, "127.0.0.1", TLS_HOST, sasl_ssl_port))
    values = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@127.0.0.1:{controller}",
        "listeners": ",".join(
            [f"{name}://{bind}:{p}" for name, bind, _, p in listeners]
            + [f"CONTROLLER://127.0.0.1:{controller}"]
        ),
        "advertised.listeners": ",".join(f"{name}://{host}:{p}" for name, _, host, p in listeners),
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": ",".join(
            ["CONTROLLER:PLAINTEXT"] + [f"{name}:{name}" for name, *_ in listeners]
        ),
        "log.dirs": str(data),
        # one node: replication 1 everywhere
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "default.replication.factor": "1",
        # fewer internal partitions and no initial rebalance delay start consumer groups faster
        "offsets.topic.num.partitions": "1",
        "transaction.state.log.num.partitions": "1",
        "group.initial.rebalance.delay.ms": "0",
        "num.partitions": "1",
        "auto.create.topics.enable": "true",
        "log.cleaner.backoff.ms": "1000",
    }
    if sasl_port is not None:
        values.update(_sasl_properties(SASL_LISTENER, sasl_users or {}))
    if tls is not None and ssl_port is not None:
        values.update(listener_properties(tls, SSL_LISTENER, client_auth=True))
    if tls is not None and sasl_ssl_port is not None:
        values.update(listener_properties(tls, SASL_SSL_LISTENER, client_auth=False))
        values.update(_sasl_properties(SASL_SSL_LISTENER, sasl_users or {}))
    return "".join(f"{k}={v}\n" for k, v in values.items())


def _sasl_properties(listener: str, users: Mapping[str, str]) -> dict[str, str]:
    """The SASL mechanisms and users of one SASL listener (SASL_PLAINTEXT or SASL_SSL)."""
    prefix = f"listener.name.{listener.lower()}"
    plain_users = " ".join(f'user_{name}="{password}"' for name, password in users.items())
    scram = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
    return {
        f"{prefix}.sasl.enabled.mechanisms": ",".join(SASL_MECHANISMS),
        f"{prefix}.plain.sasl.jaas.config": (
            f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
        ),
        f"{prefix}.scram-sha-256.sasl.jaas.config": scram,
        f"{prefix}.scram-sha-512.sasl.jaas.config": scram,
    }


def _add_scram_args(users: Mapping[str, str]) -> list[str]:
    """StorageTool format arguments that create every user for both SCRAM mechanisms."""
    return [
        arg
        for name, password in users.items()
        for mechanism in SASL_MECHANISMS
        if mechanism.startswith("SCRAM-")
        for arg in ("--add-scram", f"{mechanism}=[name={name},password={password}]")
    ]


def _wait_ready(proc: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    """Poll until the PLAINTEXT port accepts and the log says the server started, or the process died."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise BrokerError(f"kafka exited with code {proc.returncode} during start-up:\n{_tail(log_file)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                pass
        except OSError:
            time.sleep(0.2)  # polling a child process: there is no event to wait on
            continue
        if "Kafka Server started" in _tail(log_file, 400):
            return
        time.sleep(0.2)
    raise BrokerError(f"kafka did not become ready within {START_TIMEOUT:.0f}s:\n{_tail(log_file)}")


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + STOP_TIMEOUT
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    if proc is not None:
        proc.wait(timeout=10)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
