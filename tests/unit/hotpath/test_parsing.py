"""The fast read of a flat event (orjson) never changes what parse_event answers: the same event, the same
IP, the same refusal with the same reason as the exact parser, duplicate keys included."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.errors import BadEvent
from pipeline.hotpath import parsing
from pipeline.hotpath.parsing import ParsedEvent, parse_event

MAX = 64 * 1024
PURE = settings(database=None, max_examples=400)

# keys that collide in every spelling (plain, escaped, with an escaped quote or colon in them), among
# distinct ones; machine-written spacing (none) weighted up, so that about half the objects read fast
KEYS = ["ip", "\\u0069p", "i\\u0070", "a", "\\u0061", 'a\\"', 'a\\":', "b", "c", "d", "ts", "port"]
STRINGS = ['"8.8.8.8"', '"1.1.1.1"', '"2001:db8::1"', '"not an ip"', '"x\\":y"', '":"', '"\\ud800"', '"{"']
OTHERS = ["[1,[2]]", "[]", "{}", '{"k":1}', "1", "-0", "1.5", "1e400", str(2**100), "NaN", "true", "null"]
SPACE = ["", "", "", "", "", " ", "\t", "\n", "\r\n  "]


@st.composite
def objects(draw: st.DrawFn) -> bytes:
    """A JSON object text (sometimes not quite JSON) with an `ip` first, whose other keys often collide."""
    value = st.sampled_from([*STRINGS, *OTHERS])
    member = st.tuples(*(st.sampled_from(choices) for choices in (KEYS, SPACE, SPACE)), value)
    first = ("ip", draw(st.sampled_from(SPACE)), "", draw(st.sampled_from(STRINGS[:3])))
    members = [first, *draw(st.lists(member, max_size=4))]
    inner = ",".join(f'"{key}"{before}:{after}{value}' for key, before, after, value in members)
    return ("{" + draw(st.sampled_from(SPACE)) + inner + "}").encode()


def answer(raw: bytes) -> ParsedEvent | str:
    try:
        return parse_event(raw, MAX)
    except BadEvent as exc:
        return exc.reason


@PURE
@given(objects())
def test_property_the_fast_read_answers_exactly_as_the_exact_parser(raw: bytes) -> None:
    """For objects built to collide and vary, parse_event answers the same with and without orjson."""
    fast = answer(raw)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(parsing, "_flat_members", lambda text: None)
        exact = answer(raw)
    assert fast == exact


@pytest.mark.parametrize(
    "raw",
    [
        b'{"ip":"1.1.1.1","ip":"8.8.8.8"}',
        b'{"ip" :"1.1.1.1","ip":"8.8.8.8"}',  # whitespace before a colon: not counted, so not fast
        b'{"ip":"1.1.1.1","\\u0069p":"8.8.8.8"}',  # the same key spelled with an escape
        b'{"ip":"1.1.1.1","a":"\\":","a":2}',  # an escaped quote and colon in a string
    ],
)
def test_a_key_given_twice_is_refused_however_it_is_written(raw: bytes) -> None:
    """orjson would keep the last `ip`; the event is refused as ambiguous instead."""
    with pytest.raises(BadEvent, match="duplicate key"):
        parse_event(raw, MAX)


def test_a_flat_machine_written_event_is_read_by_orjson() -> None:
    """The common event (one flat object, no whitespace before colons) takes the fast read."""
    text = '{"ip":"203.0.113.7","ts":"2026-12-05T14:42:00Z","port":22,"tags":["ssh",1]}'
    assert parsing._flat_members(text) == {
        "ip": "203.0.113.7",
        "ts": "2026-12-05T14:42:00Z",
        "port": 22,
        "tags": ["ssh", 1],
    }
    assert parse_event(text.encode(), MAX) == ParsedEvent("203.0.113.7", text.encode())


@pytest.mark.parametrize(
    "text",
    [
        '{"ip":"203.0.113.7","n":{"k":1}}',  # a nested object: its keys are not counted
        '{"ip" : "203.0.113.7"}',  # whitespace before the colon
        '{"ip":"203.0.113.7","big":1e400}',  # orjson refuses it; the json module reads infinity
        '{"ip":"203.0.113.7","a":' + "[" * 300 + "]" * 300 + "}",  # many arrays: near json's recursion limit
    ],
)
def test_what_the_fast_read_cannot_vouch_for_goes_to_the_exact_parser(text: str) -> None:
    """These are left to the json module, which accepts each of them."""
    assert parsing._flat_members(text) is None
    assert parse_event(text.encode(), MAX).ip == "203.0.113.7"
