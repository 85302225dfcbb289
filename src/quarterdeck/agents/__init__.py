"""The agent runtime: per-run workspaces, sandboxed tools, run templates, quality accounting."""
