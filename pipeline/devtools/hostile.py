"""Hostile answer items for the fake ip-api: what a tampering proxy on the plain-HTTP path could send.

`Faults.hostile_rate` makes the fake server pass that share of its "success" items through one of these,
picked by its own seeded Random, so a run replays exactly. Each kind keeps `query`, so the client can tell
which IP got it, and says what the pipeline must make of it: `rejected` kinds must fail that IP
transiently (and be retried), the others must resolve with the value cleaned, or for a flag that is not
a JSON boolean, with that flag null (`pipeline.providers.ipapi_answers`).
`IpApiServer.hostile` lists (query, kind) for every item it served this way.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple

# far past the pipeline's text cap, yet small enough that a batch holding several of them stays under the
# client's 1 MiB body cap (the 200 KB case lives in the unit tests, where no body cap applies)
OVERSIZE = 8 * 1024

Item = dict[str, Any]


class Hostile(NamedTuple):
    """One way to spoil an item: its name, whether the pipeline must reject it, and the spoiler."""

    name: str
    rejected: bool
    spoil: Callable[[Item], Item]


def _set(**values: Any) -> Callable[[Item], Item]:
    return lambda item: {**item, **values}


def _fail(item: Item) -> Item:
    return {"status": "fail", "message": "<b>private range</b>", "query": item.get("query")}


KINDS: tuple[Hostile, ...] = (
    Hostile("oversized_org", False, _set(org="X" * OVERSIZE)),
    Hostile("script_in_org", False, _set(org="<script>alert(document.cookie)</script>")),
    Hostile("controls_in_city", False, _set(city="Ash\x00burn\x1b[31m\u202e\u2028!")),
    Hostile("markup_country_code", True, _set(countryCode="<b>US</b>")),
    Hostile("three_letter_country_code", True, _set(countryCode="USA")),
    Hostile("huge_lat", True, _set(lat=1e308)),
    Hostile("huge_int_lon", True, _set(lon=10**400)),
    Hostile("bool_lat", True, _set(lat=True)),
    Hostile("list_city", True, _set(city=["Ashburn"])),
    Hostile("object_isp", True, _set(isp={"name": "Evil"})),
    Hostile("negative_asn", True, _set(**{"as": "AS-5 Evil"})),
    Hostile("huge_asn", True, _set(**{"as": "AS99999999999 Evil"})),
    Hostile("markup_fail", True, _fail),
    # garbage flags are dropped (None), the item still resolves: a flag says nothing about the place
    Hostile("string_flag", False, _set(proxy="true")),
    Hostile("number_flags", False, _set(hosting=1, mobile=0)),
    Hostile("object_flag", False, _set(proxy={"vpn": True}, mobile=[True])),
)


def spoil(items: list[Item], rate: float, rng: random.Random) -> tuple[list[Item], list[tuple[str, str]]]:
    """`items` with about `rate` of the success ones spoiled, and (query, kind) for each spoiled one."""
    out: list[Item] = []
    served: list[tuple[str, str]] = []
    for item in items:
        if item.get("status") == "success" and rate > 0 and rng.random() < rate:
            kind = rng.choice(KINDS)
            item = kind.spoil(item)
            served.append((str(item.get("query")), kind.name))
        out.append(item)
    return out, served
