"""GEO_IP_FIELDS' grammar: which fields of an input event hold the IPs to enrich. Pure.

One spec per field, comma-separated in the setting: a dot path into the JSON event (`source.ip`,
`src_ip`, `client.ip`), optionally prefixed `xff:` when the field holds an X-Forwarded-For chain
(`xff:http.request.headers.x-forwarded-for`): then the client address is the right-most hop that is not
one of GEO_TRUSTED_PROXIES (the hops left of it were written by whoever sent the request, so anyone can
forge them; docs/formats.md). The value at a path may be one IP text, `ip:port`, `[v6]:port`, or an
array of them. Apart from the hot path (which walks the paths) because the settings check them at start.
"""

from __future__ import annotations

from typing import NamedTuple

XFF_PREFIX = "xff:"  # the field holds a forwarded chain: pick the client by GEO_TRUSTED_PROXIES
MAX_IP_FIELDS = 16  # configured fields; more is a typo or a job for a transform before the pipeline
MAX_PATH_DEPTH = 16  # segments per path: deeper nesting than ECS ever uses (3) is a mistake
OUTPUT_FORMATS = ("envelope", "ecs")  # GEO_OUTPUT_FORMAT
ENRICHED_KEYS = ("ip", "input")  # GEO_ENRICHED_KEY ("" picks: ip for one field, input for several)
DEFAULT_FIELDS = ("ip",)  # today's input: a JSON object with a string `ip`, or a bare IP


class FieldSpec(NamedTuple):
    """One configured IP field: its name as written (without the prefix), its path, whether a chain.
    A tuple: the hot path keys per-event dicts by it, and a tuple hashes in C."""

    name: str
    path: tuple[str, ...]
    forwarded: bool = False

    @property
    def top_level(self) -> bool:
        return len(self.path) == 1


def parse_field(spec: str) -> FieldSpec:
    """A spec as a FieldSpec; ValueError says what is wrong with it."""
    text = spec.strip()
    forwarded = text.startswith(XFF_PREFIX)
    name = text[len(XFF_PREFIX) :] if forwarded else text
    path = tuple(name.split("."))
    if not name or any(not part for part in path):
        raise ValueError(f"{spec!r} is not a dot path (e.g. source.ip, src_ip, xff:x_forwarded_for)")
    if any(ch.isspace() or ch in "[]*\"'" for ch in name):
        raise ValueError(f"{spec!r}: a path holds names and dots only (no spaces, brackets or quotes)")
    if len(path) > MAX_PATH_DEPTH:
        raise ValueError(f"{spec!r} is deeper than {MAX_PATH_DEPTH} levels")
    return FieldSpec(name, path, forwarded)


def parse_fields(specs: tuple[str, ...]) -> tuple[FieldSpec, ...]:
    """Every spec parsed (ValueError on the first bad one)."""
    return tuple(parse_field(spec) for spec in specs)


def enriched_key_mode(configured: str, n_fields: int) -> str:
    """GEO_ENRICHED_KEY as used: as configured, else `ip` for one field and `input` for several."""
    return configured or ("ip" if n_fields <= 1 else "input")
