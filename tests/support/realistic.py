"""Events as users already have them, written by this project for its tests and docs/formats.md: an ECS
firewall event (Elastic Agent / Filebeat), a Suricata EVE alert, an nginx JSON access log behind two
proxies, and a fail2ban ban (its action sends the bare IP). Addresses are public ones the offline data
knows (so a country is expected), private ones (a class, not a failure), and one broken value."""

from __future__ import annotations

import json
from collections.abc import Mapping

# every path the fixtures use: each event has its own subset (absent fields are neither IPs nor failures)
FIELDS = (
    "source.ip",
    "destination.ip",
    "related.ip",
    "src_ip",
    "dest_ip",
    "xff:http_x_forwarded_for",
    "remote_addr",
)
TRUSTED = ("10.0.0.0/8",)  # the nginx host's own load balancers

ECS_FIREWALL = {
    "@timestamp": "2026-12-01T08:14:03.512Z",
    "event": {"kind": "event", "category": ["network"], "type": ["denied"], "action": "drop"},
    "observer": {"vendor": "Fortinet", "product": "FortiGate", "type": "firewall"},
    "source": {"ip": "185.220.101.34", "port": 51234},
    "destination": {"ip": "192.168.10.5", "port": 22},
    "network": {"transport": "tcp", "direction": "inbound"},
    "related": {"ip": ["185.220.101.34", "192.168.10.5"]},
}
SURICATA_ALERT = {
    "timestamp": "2026-12-01T08:15:11.004821+0000",
    "flow_id": 1722113904329145,
    "in_iface": "eth0",
    "event_type": "alert",
    "src_ip": "45.155.205.233",
    "src_port": 40155,
    "dest_ip": "2a01:4f8:c17:b8f::2",
    "dest_port": 443,
    "proto": "TCP",
    "alert": {
        "action": "allowed",
        "gid": 1,
        "signature_id": 2024897,
        "rev": 3,
        "signature": "ET SCAN Suspicious inbound to mySQL port 3306",
        "category": "Attempted Recon",
        "severity": 2,
    },
}
NGINX_FORWARDED = {
    "time_local": "01/Dec/2026:08:16:40 +0000",
    "remote_addr": "10.0.3.17",
    "http_x_forwarded_for": "8.8.8.8, 81.2.69.142, 10.0.1.4",  # 8.8.8.8 is forged by the client
    "request": "GET /wp-login.php HTTP/1.1",
    "status": 404,
    "body_bytes_sent": 153,
    "http_user_agent": "Mozilla/5.0 (compatible; scanner)",
}
FAIL2BAN_BAN = b"91.240.118.172"  # fail2ban's kafka action: `echo <ip> | kcat -P -t ip-events`
# a shipper that wrote `ip:port` into source.ip (as load balancer logs do), and a garbage destination:
# the port is dropped, the destination field fails, the source is still enriched
BROKEN_DESTINATION = {
    "@timestamp": "2026-12-01T08:17:00Z",
    "source": {"ip": "5.188.206.26:4444"},
    "destination": {"ip": "not-an-address"},
}
NO_IP = {"@timestamp": "2026-12-01T08:18:00Z", "source": {"ip": "999.1.2.3"}}  # nothing valid: dead letter

# the client each event should be enriched for, by field name (what the output must show)
EXPECTED = {
    "ecs": {"source.ip": "185.220.101.34", "destination.ip": "192.168.10.5"},
    "suricata": {"src_ip": "45.155.205.233", "dest_ip": "2a01:4f8:c17:b8f::2"},
    "nginx": {"http_x_forwarded_for": "81.2.69.142", "remote_addr": "10.0.3.17"},
    "fail2ban": {"ip": "91.240.118.172"},
    "broken": {"source.ip": "5.188.206.26"},
}


def payloads() -> dict[str, bytes]:
    """Each fixture as the bytes a producer sends, by name."""

    def dump(event: Mapping[str, object]) -> bytes:
        return json.dumps(event, separators=(",", ":")).encode()

    return {
        "ecs": dump(ECS_FIREWALL),
        "suricata": dump(SURICATA_ALERT),
        "nginx": dump(NGINX_FORWARDED),
        "fail2ban": FAIL2BAN_BAN,
        "broken": dump(BROKEN_DESTINATION),
        "none": dump(NO_IP),
    }
