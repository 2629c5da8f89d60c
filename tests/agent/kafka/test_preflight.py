"""The start-up preflight logs its cautions before it connects (issue 19, item 13c)."""

from __future__ import annotations

import logging
import socket

import pytest

from pipeline.config.settings import Settings
from pipeline.errors import BrokerError
from pipeline.kafka.preflight import check_kafka


async def test_sasl_plain_over_plaintext_is_warned_at_start(caplog: pytest.LogCaptureFixture) -> None:
    """A worker configured for PLAIN over SASL_PLAINTEXT logs one WARNING at its preflight, without the
    password, whether or not the broker then answers (here: a refused port)."""
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # bound, never listening: connection refused
    port = closed.getsockname()[1]
    settings = Settings.from_env(
        {
            "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "GEO_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
            "GEO_KAFKA_SASL_USERNAME": "geo",
            "GEO_KAFKA_SASL_PASSWORD": "secret-pw",
        }
    )
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline"), pytest.raises(BrokerError):
            await check_kafka(settings, timeout=2.0)
    finally:
        closed.close()
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    warned = [r for r in warnings if "SASL_PLAINTEXT" in r.getMessage()]
    assert len(warned) == 1 and "in clear" in warned[0].getMessage()
    assert all("secret-pw" not in r.getMessage() for r in caplog.records)
