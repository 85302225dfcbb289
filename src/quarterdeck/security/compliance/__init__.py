"""Compliance evidence: controls mapped to what the stored data shows (``quarterdeck compliance``)."""
