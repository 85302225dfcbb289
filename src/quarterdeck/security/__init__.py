"""Security: API keys and roles (auth), the audit log (audit), and the policy gate (policy)."""
