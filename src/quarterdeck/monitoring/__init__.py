"""The monitoring bundle's tools: SLO burn-rate rules for Prometheus, and ``quarterdeck doctor``."""
