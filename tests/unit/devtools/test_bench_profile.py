"""The profile's stages: each function on a batch's path is counted in the step it belongs to."""

from __future__ import annotations

from pipeline.devtools.bench.profile import OTHER, stage_of


def test_the_event_parser_counts_as_json_parsing_and_the_ip_in_it_as_normalisation() -> None:
    """parse_event, the orjson read and the exact parser are JSON parsing; the IP inside is normalisation."""
    for name in ("parse_event", "_flat_object", "_json", "_unique_keys", "_text"):
        assert stage_of(("/x/pipeline/hotpath/parsing.py", 1, name)).startswith("JSON parse"), name
    assert stage_of(("~", 0, "<built-in method orjson.loads>")).startswith("JSON parse")
    assert stage_of(("/x/pipeline/hotpath/parsing.py", 1, "_ip")) == "IP normalisation"
    assert stage_of(("/x/pipeline/hotpath/extract.py", 1, "normalise_with_port")) == "IP normalisation"
    assert stage_of(("/x/pipeline/web/server.py", 1, "metrics")) == OTHER
