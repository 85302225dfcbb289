"""The monthly operations report (issue 21): figures computed from stored data, stored per month
and tenant, rendered as JSON, Markdown, HTML or PDF, and a FinOps FOCUS cost export."""
