"""Settings -> how every Kafka client connects: one mapping for our aiokafka clients and Faust's.

Two outputs, built from the same `Settings` so they cannot disagree:

- `client_kwargs(settings)`: keyword arguments for `AIOKafkaProducer`, `AIOKafkaConsumer` and
  `AIOKafkaAdminClient` (`bootstrap_servers`, `security_protocol`, and the SASL and TLS arguments the
  protocol needs). Spread them first and add the client's own options after:
  `AIOKafkaProducer(**client_kwargs(settings), acks="all")`.
- `faust_credentials(settings)`: the value for `faust.App(broker_credentials=...)`. Faust hands it to its
  producer (also the threaded and transactional ones), its consumer and, through those two clients' own
  connections, its topic creation (faust 0.15.3, transport/drivers/aiokafka.py).

The SASL password is revealed only into those two objects. `ClientKwargs` prints it redacted and Faust's
`SASLCredentials` prints only the username, so neither leaks through a repr, an f-string or a log line.

Pure apart from reading the TLS files into an `ssl.SSLContext`; faust is imported only when asked for.
"""

from __future__ import annotations

import ssl
from typing import Any

from pipeline.config.limits import SASL_MECHANISMS, SECURITY_PROTOCOLS
from pipeline.config.settings import Settings
from pipeline.errors import ConfigError

REDACTED = "**********"
SECRET_KWARGS = frozenset({"sasl_plain_password"})
TLS_PROTOCOLS = ("SSL", "SASL_SSL")


class ClientKwargs(dict[str, Any]):
    """The keyword arguments of one aiokafka client; `repr()`/`str()` hide the SASL password."""

    def __repr__(self) -> str:
        shown = {k: (REDACTED if k in SECRET_KWARGS and v is not None else v) for k, v in self.items()}
        return f"ClientKwargs({shown!r})"

    __str__ = __repr__


def bootstrap_servers(settings: Settings) -> list[str]:
    """KAFKA_BOOTSTRAP_SERVERS as a list of host:port (it may name several brokers, comma-separated)."""
    return [h.strip() for h in settings.kafka_bootstrap.split(",") if h.strip()]


def ssl_context(settings: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL and SASL_SSL (None otherwise): the server is verified against
    GEO_KAFKA_SSL_CAFILE (or the system's trust store) including its host name, and the client presents
    GEO_KAFKA_SSL_CERTFILE/KEYFILE when they are set."""
    _check(settings)
    if settings.kafka_security_protocol not in TLS_PROTOCOLS:
        return None
    cafile = settings.kafka_ssl_cafile
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cafile) if cafile else None)
    if settings.kafka_ssl_certfile is not None:
        password = settings.kafka_ssl_key_password
        context.load_cert_chain(
            str(settings.kafka_ssl_certfile),
            str(settings.kafka_ssl_keyfile) if settings.kafka_ssl_keyfile else None,
            password=password.reveal() if password is not None else None,
        )
    return context


def client_kwargs(settings: Settings) -> ClientKwargs:
    """Keyword arguments every aiokafka client (producer, consumer, admin) needs to reach and
    authenticate to the brokers; a new object (and TLS context) each call."""
    _check(settings)
    protocol = settings.kafka_security_protocol
    kwargs = ClientKwargs(bootstrap_servers=bootstrap_servers(settings), security_protocol=protocol)
    if protocol.startswith("SASL_"):
        password = settings.kafka_sasl_password
        kwargs["sasl_mechanism"] = settings.kafka_sasl_mechanism
        kwargs["sasl_plain_username"] = settings.kafka_sasl_username
        kwargs["sasl_plain_password"] = password.reveal() if password is not None else None
    context = ssl_context(settings)
    if context is not None:
        kwargs["ssl_context"] = context
    return kwargs


def faust_credentials(settings: Settings) -> Any:
    """The value for `faust.App(broker_credentials=...)`: None for PLAINTEXT, `faust.SSLCredentials` for
    SSL, `faust.SASLCredentials` (with the TLS context for SASL_SSL) otherwise."""
    _check(settings)
    protocol = settings.kafka_security_protocol
    if protocol == "PLAINTEXT":
        return None
    import faust  # only here: the rest of this module must not pull in Faust

    context = ssl_context(settings)
    if protocol == "SSL":
        return faust.SSLCredentials(context)
    password = settings.kafka_sasl_password
    return faust.SASLCredentials(
        username=settings.kafka_sasl_username,
        password=password.reveal() if password is not None else None,
        mechanism=settings.kafka_sasl_mechanism,
        ssl_context=context,  # not None turns the protocol into SASL_SSL
    )


def faust_app_kwargs(settings: Settings) -> dict[str, Any]:
    """`broker` and `broker_credentials` for `faust.App(...)`, from the same settings as the clients."""
    # Faust splits "kafka://a:9092,b:9092" into one URL per broker itself
    return {
        "broker": f"kafka://{settings.kafka_bootstrap}",
        "broker_credentials": faust_credentials(settings),
    }


def _check(settings: Settings) -> None:
    # Settings.validate() reports these with more context; this guards settings built without it.
    if settings.kafka_security_protocol not in SECURITY_PROTOCOLS:
        raise ConfigError(f"GEO_KAFKA_SECURITY_PROTOCOL={settings.kafka_security_protocol!r} is not valid")
    if settings.kafka_security_protocol.startswith("SASL_") and (
        settings.kafka_sasl_mechanism not in SASL_MECHANISMS
        or not settings.kafka_sasl_username
        or not settings.kafka_sasl_password
    ):
        raise ConfigError(
            "SASL needs a valid GEO_KAFKA_SASL_MECHANISM, GEO_KAFKA_SASL_USERNAME and GEO_KAFKA_SASL_PASSWORD"
        )
