"""The small HTTPS service: client autoconfiguration, Prometheus metrics, health (see ``service``)."""
