"""`/geo/{ip}` shows an entry in this version's form, whichever version wrote it."""

from __future__ import annotations

from pipeline.models import entry_view

OLD = (  # as 0.1.x wrote it: no data_version, no last_seen, no flags
    b'{"ip":"8.8.8.8","status":"resolved","geo":{"country_code":"US","country_name":"United States",'
    b'"region":null,"city":"Mountain View","latitude":37.4,"longitude":-122.1,"asn":15169,"as_name":"GOOGLE",'
    b'"isp":null,"org":null},"provider":"ipapi","attempts":1,"first_seen":5.0,"updated_at":6.0,'
    b'"next_retry_at":7.0,"last_error":null}'
)


def test_an_older_entry_is_shown_with_every_field_and_null_flags() -> None:
    """The fields an older version did not write appear with their defaults; what it wrote is unchanged."""
    view = entry_view(OLD)
    assert (view["geo"]["proxy"], view["geo"]["hosting"], view["geo"]["mobile"]) == (None, None, None)
    assert (view["data_version"], view["last_seen"]) == (None, 5.0)
    assert view["geo"]["city"] == "Mountain View" and view["first_seen"] == 5.0
    assert view["status"] == "resolved" and view["attempts"] == 1


def test_a_value_that_is_no_entry_is_shown_as_it_is() -> None:
    """A stored value this version cannot read as an entry is relayed unchanged rather than failing."""
    assert entry_view(b'{"ip":"8.8.8.8","status":"someday"}') == {"ip": "8.8.8.8", "status": "someday"}
