"""The Anthropic-compatible gateway: Claude Code and Anthropic SDK apps point
``ANTHROPIC_BASE_URL`` at Quarterdeck and are metered, budgeted, limited and audited.

Importing this package stays cheap; the two names ``app.py``'s error handler needs are here.
"""

from quarterdeck.gateway.errors import anthropic_error_response, is_gateway_path

__all__ = ["anthropic_error_response", "is_gateway_path"]
