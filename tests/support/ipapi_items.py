"""ip-api answer items and the API key that the protocol's unit tests and the provider's agent tests share."""

from __future__ import annotations

KEY = "s3cr3t-K3Y/+="  # every spelling of it (quoted, in a URL) must stay out of logs

GOOGLE = {
    "status": "success", "country": "United States", "countryCode": "US", "regionName": "Virginia",
    "city": "Ashburn", "lat": 39.03, "lon": -77.5, "isp": "Google LLC", "org": "Google Public DNS",
    "as": "AS15169 Google LLC", "asname": "GOOGLE", "query": "8.8.8.8",
}  # fmt: skip
