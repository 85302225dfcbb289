"""Metrics, probes, health monitoring and alerting glue."""
