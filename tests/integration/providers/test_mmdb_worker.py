"""MaxMind-format databases in a running worker on the real broker: city and ASN on first sight, and a
replaced file taken up without a restart while events flow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.app import build, running
from tests.support.kafka import wait_for
from tests.support.mmdb import BERLIN, EPOCH, KNOWN_IPS, NETWORKS, moved, publish, write_layout
from tests.support.pipeline import CountingProvider, Outputs, make_settings, publish_values

pytestmark = pytest.mark.integration


async def test_city_and_asn_databases_first_in_the_chain_enrich_first_sights_with_city_and_asn(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """With GEO_PROVIDERS=mmdb,offline and City+ASN files, the very first event of each known IP carries
    the country, city, coordinates and ASN from the files ("provider": "mmdb"); an IP the files do not
    know falls back to the registry country."""
    city = write_layout(tmp_path, "geolite2-city")
    asn = write_layout(tmp_path, "geolite2-asn")
    settings = make_settings(kafka_bootstrap, tmp_path / "w", providers=("mmdb", "offline"), mmdb=(city, asn))
    ips = [*KNOWN_IPS, "9.9.9.9"]
    geo = build(settings, providers=[CountingProvider()])
    async with running(geo), Outputs(settings) as out:
        await publish_values(
            kafka_bootstrap, settings.events_topic, [json.dumps({"ip": ip}).encode() for ip in ips]
        )

        async def all_out() -> bool:
            await out.poll()
            return len(out.enriched) >= len(ips)

        await wait_for(all_out, 60, message=lambda: f"enriched {len(out.enriched)}")
    first = {e["ip"]: e["geo"] for e in out.enriched}
    for ip, network in KNOWN_IPS.items():
        entry = first[ip]
        assert (entry["status"], entry["source"]) == ("pending", "mmdb")
        assert entry["city"] == network.place.city and entry["asn"] == network.asn
        assert entry["country_code"] == network.place.country_code
    assert (first["9.9.9.9"]["source"], first["9.9.9.9"]["country_code"]) == ("offline", "US")


async def test_a_replaced_database_is_taken_up_under_traffic_without_a_restart(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A new build of the City file, renamed over the old one while the worker runs, answers the first
    sights that come after the reload; a garbage replacement is refused and the data in use stays."""
    city = write_layout(tmp_path, "geolite2-city")
    settings = make_settings(kafka_bootstrap, tmp_path / "w", providers=("mmdb", "offline"), mmdb=(city,))
    geo = build(settings, providers=[CountingProvider()])
    source = geo.resolver._offline["mmdb"]
    async with running(geo), Outputs(settings) as out:
        await publish_values(kafka_bootstrap, settings.events_topic, [b'{"ip": "8.8.8.1"}'])
        (tmp_path / "new").mkdir()
        newer = tuple(moved(n, BERLIN) if n.cidr == "8.8.8.0/24" else n for n in NETWORKS)
        publish(
            write_layout(tmp_path / "new", "geolite2-city", build_epoch=EPOCH + 86400, networks=newer), city
        )
        await wait_for(lambda: "@1700086400" in source.version, 30, message=lambda: source.version)
        await publish_values(kafka_bootstrap, settings.events_topic, [b'{"ip": "8.8.8.2"}'])
        (tmp_path / "bad").mkdir()
        (tmp_path / "bad" / "city.mmdb").write_bytes(b"not a database")
        publish(tmp_path / "bad" / "city.mmdb", city)
        await wait_for(lambda: str(city) in source.rejected, 30, message=lambda: f"{source.rejected}")
        await publish_values(kafka_bootstrap, settings.events_topic, [b'{"ip": "8.8.8.3"}'])

        async def three() -> bool:
            await out.poll()
            return len(out.enriched) >= 3

        await wait_for(three, 60, message=lambda: f"enriched {len(out.enriched)}")
    cities = {e["ip"]: e["geo"]["city"] for e in out.enriched}
    assert cities == {"8.8.8.1": "Mountain View", "8.8.8.2": "Berlin", "8.8.8.3": "Berlin"}
