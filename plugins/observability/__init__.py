"""Bundled observability plugins: Prometheus metrics (``metrics``) and OpenTelemetry traces (``otel``)."""
