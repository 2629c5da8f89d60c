"""Each worker's HTTP API: lookups forwarded to an IP's owner, health and readiness, and Prometheus
metrics."""
