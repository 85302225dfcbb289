"""Quarterdeck: a control plane that runs AI coding agents durably, around the clock."""

from __future__ import annotations

__version__ = "0.1.0"
