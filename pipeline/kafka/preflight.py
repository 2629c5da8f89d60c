"""One quick connection before a worker starts, so a wrong Kafka security setting is one clear error (and a
risky one, such as SASL PLAIN over plaintext, one warning).

aiokafka clients turn every failed bootstrap into `KafkaConnectionError("Unable to bootstrap from [...]")`
and only log the reason (a rejected password, a listener that wants SASL). `check_kafka` connects to the
bootstrap servers once with the same arguments as every client (`kafka.config.client_kwargs`), asks for
metadata, and raises `BrokerError` naming the cause and the variables to look at.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

from pipeline.config.checks import cautions
from pipeline.config.settings import Settings
from pipeline.errors import BrokerError
from pipeline.kafka.config import client_kwargs

# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and _IP_ADDRESS_MISMATCH: the certificate names another host
NAME_MISMATCH = frozenset({62, 64})
log = logging.getLogger(__name__)


async def check_kafka(settings: Settings, *, timeout: float = 10.0) -> None:
    """Return once one bootstrap server accepted our credentials and answered a metadata request;
    BrokerError with every server's reason otherwise, within about `timeout` seconds per server. Settings
    that work but expose something (SASL PLAIN in clear) are logged as warnings first."""
    for caution in cautions(settings):
        log.warning("kafka: %s", caution)
    from aiokafka.conn import collect_hosts, create_conn
    from aiokafka.protocol.metadata import MetadataRequest

    kwargs: dict[str, Any] = dict(client_kwargs(settings))
    servers = kwargs.pop("bootstrap_servers")
    problems: list[str] = []
    for host, port, _ in collect_hosts(servers):
        try:
            async with asyncio.timeout(timeout):
                conn = await create_conn(host, port, request_timeout_ms=int(timeout * 1000), **kwargs)
                try:
                    await conn.send(MetadataRequest([]))
                finally:
                    conn.close()
            return
        except Exception as exc:  # every failure becomes one line of the error, not a traceback
            problems.append(f"{host}:{port} {_explain(exc, settings, timeout)}")
    raise BrokerError(f"Kafka (KAFKA_BOOTSTRAP_SERVERS={settings.kafka_bootstrap}): " + "; ".join(problems))


def _explain(exc: Exception, settings: Settings, timeout: float) -> str:
    """What went wrong and which variables to check."""
    from aiokafka import errors

    protocol = f"GEO_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol}"
    tls = _tls_refusal(exc, settings)
    if tls is not None:
        return tls
    if isinstance(exc, errors.SaslAuthenticationFailed):
        return (
            f"rejected user {settings.kafka_sasl_username!r} with {settings.kafka_sasl_mechanism} ({exc}): "
            "check GEO_KAFKA_SASL_USERNAME, GEO_KAFKA_SASL_PASSWORD and GEO_KAFKA_SASL_MECHANISM"
        )
    if isinstance(exc, errors.UnsupportedSaslMechanismError):
        return f"does not accept GEO_KAFKA_SASL_MECHANISM={settings.kafka_sasl_mechanism}"
    if isinstance(exc, errors.IllegalSaslStateError):
        return f"does not speak SASL: is {protocol} right for this listener?"
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed ({exc}): check GEO_KAFKA_SSL_CAFILE, GEO_KAFKA_SSL_CERTFILE and _KEYFILE"
    if isinstance(exc, errors.KafkaConnectionError | ConnectionResetError):
        return f"closed the connection ({exc}): does this listener want SASL or TLS rather than {protocol}?"
    if isinstance(exc, TimeoutError):
        return f"did not answer within {timeout:.0f}s (with {protocol})"
    if isinstance(exc, OSError):
        return f"cannot be reached: {type(exc).__name__}: {exc}"
    return f"failed: {type(exc).__name__}: {exc}"


# what the broker's TLS alert says when it refuses our client certificate (or our lack of one); in TLS 1.3
# the alert arrives after our side of the handshake, on the first read, so it is found in the cause chain
CLIENT_CERT_ALERTS = ("certificate required", "bad certificate", "unknown ca", "certificate unknown")


def _tls_refusal(exc: BaseException, settings: Settings) -> str | None:
    """The TLS setting to fix when `exc` (or what caused it) is a certificate check that failed."""
    seen: list[BaseException] = []
    cause: BaseException | None = exc
    while cause is not None and cause not in seen:
        seen.append(cause)
        cause = cause.__cause__ or cause.__context__
    for error in seen:
        if isinstance(error, ssl.SSLCertVerificationError):
            if error.verify_code in NAME_MISMATCH:
                return (
                    f"TLS host name check failed ({error.verify_message}): the broker's certificate does not "
                    "name the host the client connects to; check KAFKA_BOOTSTRAP_SERVERS (and the broker's "
                    "advertised listeners): use a name the certificate holds"
                )
            return (
                f"TLS: the broker's certificate is not trusted ({error.verify_message}): check "
                "GEO_KAFKA_SSL_CAFILE (the CA that signed the broker's certificate)"
            )
        text = str(error).lower().replace("_", " ")
        if isinstance(error, ssl.SSLError | OSError) and any(a in text for a in CLIENT_CERT_ALERTS):
            given = (
                "a client without a certificate" if settings.kafka_ssl_certfile is None else "our certificate"
            )
            return (
                f"TLS: the broker refused {given} ({error}): check GEO_KAFKA_SSL_CERTFILE and "
                "GEO_KAFKA_SSL_KEYFILE (a certificate signed by a CA the broker trusts)"
            )
    return None
