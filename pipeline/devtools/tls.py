"""TLS material for the local broker's SSL and SASL_SSL listeners, made at start with the `openssl` command
line (Java's `keytool` turns the CA into the broker's truststore): a test fixture, never a secure setup.

`make_tls(folder)` writes, each with a short life (TLS_DAYS):
- `ca.pem` (+ key): the CA clients trust (GEO_KAFKA_SSL_CAFILE);
- the broker's keystore (`broker.p12`, its certificate for the DNS name `localhost` only, signed by the CA)
  and truststore (`trust.p12`: that CA, for client certificates);
- `client.pem`/`client.key`: a client certificate the broker trusts (signed by the CA);
- `other-ca.pem`, and `stranger.pem`/`stranger.key`: a CA nobody trusts and a client certificate it signed,
  for the refusals a user meets (a wrong CA file, a client certificate the broker does not trust).

The broker advertises its TLS listeners as `localhost`, so clients check the name its certificate holds; a
client told `127.0.0.1` instead meets a host name that does not match.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import BrokerError

TLS_DAYS = 2  # test certificates: long enough for any run, short enough that a stray copy is useless soon
STORE_PASSWORD = "geo-pipeline-test"  # of the broker's PKCS12 stores; test material only
TLS_HOST = "localhost"  # the only name in the broker's certificate, and the name it advertises
KEY = ["-newkey", "rsa:2048", "-nodes"]  # RSA 2048: quick to make, accepted by Java 17 and OpenSSL 3


@dataclass(frozen=True)
class TlsFiles:
    """Where `make_tls` put everything."""

    folder: Path

    def __getattr__(self, name: str) -> Path:  # ca, ca_key, client, client_key, other_ca, stranger, ...
        if name not in FILES:
            raise AttributeError(name)
        return self.folder / FILES[name]


FILES = {
    "ca": "ca.pem",
    "ca_key": "ca.key",
    "keystore": "broker.p12",
    "truststore": "trust.p12",
    "client": "client.pem",
    "client_key": "client.key",
    "other_ca": "other-ca.pem",
    "other_ca_key": "other-ca.key",
    "stranger": "stranger.pem",
    "stranger_key": "stranger.key",
}


def make_tls(folder: Path) -> TlsFiles:
    """Make the CAs, the broker's stores and the client certificates in `folder` (created)."""
    openssl = _tool("openssl", "openssl")
    keytool = _tool("keytool", "openjdk-17-jre-headless")
    folder.mkdir(parents=True, exist_ok=True)
    files = TlsFiles(folder)
    cas = ((files.ca, files.ca_key, "geo test CA"), (files.other_ca, files.other_ca_key, "other CA"))
    for ca, key, name in cas:
        _run(
            openssl,
            "req",
            "-x509",
            *KEY,
            "-keyout",
            key,
            "-out",
            ca,
            "-days",
            TLS_DAYS,
            "-subj",
            f"/CN={name}",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        )
    broker_pem, broker_key = folder / "broker.pem", folder / "broker.key"
    _signed(openssl, folder, broker_pem, broker_key, files.ca, files.ca_key, "broker", f"DNS:{TLS_HOST}")
    _signed(openssl, folder, files.client, files.client_key, files.ca, files.ca_key, "geo client", None)
    stranger = (files.stranger, files.stranger_key, files.other_ca, files.other_ca_key)
    _signed(openssl, folder, *stranger, "stranger", None)
    _run(
        openssl,
        "pkcs12",
        "-export",
        "-in",
        broker_pem,
        "-inkey",
        broker_key,
        "-certfile",
        files.ca,
        "-name",
        "broker",
        "-out",
        files.keystore,
        "-passout",
        f"pass:{STORE_PASSWORD}",
    )
    _run(
        keytool,
        "-importcert",
        "-noprompt",
        "-alias",
        "ca",
        "-file",
        files.ca,
        "-keystore",
        files.truststore,
        "-storetype",
        "PKCS12",
        "-storepass",
        STORE_PASSWORD,
    )
    for key in folder.glob("*.key"):
        key.chmod(0o600)
    return files


def listener_properties(files: TlsFiles, name: str, *, client_auth: bool) -> dict[str, str]:
    """server.properties entries for one TLS listener (`name` as in `listeners`, e.g. "SSL")."""
    prefix = f"listener.name.{name.lower()}."
    return {
        prefix + "ssl.keystore.type": "PKCS12",
        prefix + "ssl.keystore.location": str(files.keystore),
        prefix + "ssl.keystore.password": STORE_PASSWORD,
        prefix + "ssl.key.password": STORE_PASSWORD,
        prefix + "ssl.truststore.type": "PKCS12",
        prefix + "ssl.truststore.location": str(files.truststore),
        prefix + "ssl.truststore.password": STORE_PASSWORD,
        prefix + "ssl.client.auth": "required" if client_auth else "none",
    }


def _signed(
    openssl: str, folder: Path, pem: Path, key: Path, ca: Path, ca_key: Path, name: str, san: str | None
) -> None:
    """A certificate for `name` signed by `ca`, with `san` as its subjectAltName (None: a client's)."""
    csr, ext = folder / f"{pem.stem}.csr", folder / f"{pem.stem}.ext"
    usage = "serverAuth" if san else "clientAuth"
    ext.write_text(f"extendedKeyUsage={usage}\n" + (f"subjectAltName={san}\n" if san else ""))
    _run(openssl, "req", "-new", *KEY, "-keyout", key, "-out", csr, "-subj", f"/CN={name}")
    _run(
        openssl,
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        ca,
        "-CAkey",
        ca_key,
        "-CAcreateserial",
        "-out",
        pem,
        "-days",
        TLS_DAYS,
        "-extfile",
        ext,
    )
    csr.unlink()
    ext.unlink()


def _run(*args: object) -> None:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BrokerError(f"making the test TLS material failed: {args[1]} {args[2]}: {done.stderr.strip()}")


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise BrokerError(f"'{name}' not found on PATH: install {package} (the TLS listeners need it)")
    return path
