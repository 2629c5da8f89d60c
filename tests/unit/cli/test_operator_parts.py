"""Small decisions behind the operator features: metric labels, worker discovery, produce's records, the
log and web settings."""

from __future__ import annotations

import io
import json
import logging

import pytest
from aiokafka.coordinator.protocol import ConsumerProtocolMemberMetadata

from pipeline.cli.logs import JsonFormatter, LibraryLines, configure, levels
from pipeline.cli.ops import record_for
from pipeline.config.limits import log_levels
from pipeline.config.settings import Settings
from pipeline.devtools.workloads import BAD_INPUTS
from pipeline.errors import BadEvent, ConfigError
from pipeline.hotpath.routing import parse_event, reason_label
from pipeline.kafka.group import member_url
from pipeline.models import GeoData, PermanentFailure, Resolved, TransientFailure
from pipeline.resolver.service import answer_label


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        (None, "empty"),
        (b"  ", "empty"),
        (b"x" * 100, "too_large"),
        (b"\xff\xfe", "not_utf8"),
        (b"{broken", "invalid_json"),
        (b'{"ip": NaN}', "invalid_json"),
        (b"[]", "not_an_object"),
        (b"42", "not_an_object"),
        (b'{"host": "x"}', "missing_ip"),
        (b'{"ip": 42}', "ip_not_a_string"),
        (b"010.1.1.1", "invalid_ip"),
        (b"1.2.3.0/24", "invalid_ip"),
    ],
)
def test_every_dead_letter_reason_has_a_stable_label(raw: bytes | None, label: str) -> None:
    """The reasons parse_event gives map to a few fixed labels (no sizes or type names in a label)."""
    with pytest.raises(BadEvent) as caught:
        parse_event(raw, 64)
    assert reason_label(caught.value.reason) == label


def test_workload_bad_inputs_never_fall_into_other() -> None:
    """Every kind of bad input the tests use has a label of its own."""
    for raw in BAD_INPUTS:
        with pytest.raises(BadEvent) as caught:
            parse_event(raw, 65536)
        assert reason_label(caught.value.reason) != "other"
    assert reason_label("could not write to x: RecordTooLargeError") == "unwritable"
    assert reason_label("something new") == "other"


def test_answers_are_labelled_by_provider_and_outcome() -> None:
    """Resolved, permanent and transient answers (a fallback's too) keep their provider."""
    assert answer_label(Resolved(GeoData("US"), "ipapi")) == ("ipapi", "resolved")
    assert answer_label(PermanentFailure("reserved range", "ipapi")) == ("ipapi", "permanent")
    assert answer_label(TransientFailure("429", "ipapi", GeoData("US"))) == ("ipapi", "transient")
    assert answer_label(None) == ("none", "transient")


def test_member_url_reads_the_url_faust_puts_into_its_group_membership() -> None:
    """Faust's assignor metadata carries the worker's canonical URL; other members' metadata gives None."""
    faust = json.dumps({"assignment": {}, "url": "http://w1:6066", "changelog_distribution": {}}).encode()
    assert member_url(ConsumerProtocolMemberMetadata(3, ["t"], faust).encode()) == "http://w1:6066"
    assert member_url(ConsumerProtocolMemberMetadata(0, ["t"], b"").encode()) is None
    assert member_url(b"garbage") is None


def test_produce_keys_json_lines_by_their_ip_and_bare_ips_by_themselves() -> None:
    """Blank lines are skipped; nothing else is judged here (the pipeline dead-letters bad input)."""
    assert record_for('{"ip": "8.8.8.8", "jail": "sshd"}\n') == (
        b"8.8.8.8",
        b'{"ip": "8.8.8.8", "jail": "sshd"}',
    )
    assert record_for(" 1.1.1.1 \n") == (b"1.1.1.1", b"1.1.1.1")
    assert record_for("{broken\n") == (None, b"{broken")
    assert record_for('{"ip": 42}') == (None, b'{"ip": 42}')
    assert record_for("   \n") is None


def test_log_levels_take_a_bare_level_and_logger_pairs() -> None:
    """A bare level is the pipeline's; `name=LEVEL` sets any logger; case does not matter."""
    assert log_levels("debug") == {"pipeline": "DEBUG"}
    assert log_levels("INFO, faust=info,aiokafka=DEBUG") == {
        "pipeline": "INFO",
        "faust": "INFO",
        "aiokafka": "DEBUG",
    }
    with pytest.raises(ValueError, match="'LOUD' is not a level"):
        log_levels("LOUD")


def test_libraries_are_quiet_by_default_and_can_be_raised() -> None:
    """Faust, mode and aiokafka at WARNING and the pipeline at INFO unless GEO_LOG_LEVEL says otherwise."""
    quiet = levels(Settings.from_env({}))
    assert quiet["pipeline"] == logging.INFO and quiet["faust"] == quiet["aiokafka"] == logging.WARNING
    loud = levels(Settings.from_env({"GEO_LOG_LEVEL": "WARNING,faust=DEBUG"}))
    assert loud["pipeline"] == logging.WARNING and loud["faust"] == logging.DEBUG


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"GEO_LOG_LEVEL": "chatty"}, "GEO_LOG_LEVEL='chatty' is not valid"),
        ({"GEO_LOG_FORMAT": "xml"}, "GEO_LOG_FORMAT='xml' is not valid: use text or json"),
        ({"GEO_ADVERTISED_URL": "w1:6066"}, "GEO_ADVERTISED_URL='w1:6066' is not valid"),
        ({"GEO_ADVERTISED_URL": "http://w1:6066/api"}, "GEO_ADVERTISED_URL="),
        ({"GEO_ADVERTISED_URL": "http://u:p@w1:6066"}, "must not hold credentials"),
    ],
)
def test_bad_operator_settings_are_refused(environ: dict[str, str], message: str) -> None:
    """Each names its variable and what to use."""
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(environ)


def test_json_lines_and_library_lines_held_back() -> None:
    """GEO_LOG_FORMAT=json writes one object per line; a library's INFO line through our logger is dropped,
    our own INFO line is kept."""
    stream = io.StringIO()
    root = logging.getLogger()
    touched = ["pipeline", "faust", "mode", "aiokafka", "aiohttp", "kafka"]
    saved = (list(root.handlers), root.level, {name: logging.getLogger(name).level for name in touched})
    try:
        configure(Settings.from_env({"GEO_LOG_FORMAT": "JSON"}), stream)
        logging.getLogger("pipeline.test").info("hello %s", "there")
        line = json.loads(stream.getvalue().splitlines()[-1])
        assert (line["level"], line["logger"], line["message"]) == ("INFO", "pipeline.test", "hello there")
        record = logging.LogRecord(
            "pipeline.web.server", logging.INFO, "/x/site-packages/mode/services.py", 1, "m", (), None
        )
        assert not LibraryLines(logging.WARNING).filter(record)
        record.pathname = "/x/pipeline/web.py"
        assert LibraryLines(logging.WARNING).filter(record)
        assert JsonFormatter().format(record).startswith("{")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved[0]:
            root.addHandler(handler)
        root.setLevel(saved[1])
        for name, level in saved[2].items():
            logging.getLogger(name).setLevel(level)
