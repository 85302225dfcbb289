"""Approvals: tool calls the policy gate held (``require_approval``) until a person decides."""
