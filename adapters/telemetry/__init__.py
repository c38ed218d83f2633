"""Logs (structlog JSON with trace ids), traces (OpenTelemetry) and metrics (Prometheus)."""
