"""Test-only helpers: local fakes of the model provider APIs, and the fixtures that start them."""
