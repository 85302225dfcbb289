"""The Anthropic-compatible gateway: Claude Code and Anthropic SDK apps point
``ANTHROPIC_BASE_URL`` at Quarterdeck and are metered, budgeted, limited and audited.

Importing this package stays cheap (``quarterdeck gateway ...`` goes through it, and
``gateway.errors`` imports FastAPI): the two names ``app.py``'s error handler needs are here,
imported on first use (:mod:`quarterdeck.kit.lazy`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quarterdeck.kit.lazy import lazy_exports

if TYPE_CHECKING:
    from quarterdeck.gateway.errors import anthropic_error_response, is_gateway_path

__all__ = ["anthropic_error_response", "is_gateway_path"]
__getattr__ = lazy_exports(
    __name__, {"quarterdeck.gateway.errors": ("anthropic_error_response", "is_gateway_path")}
)
