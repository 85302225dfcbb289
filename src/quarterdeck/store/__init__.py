"""Postgres: the embedded server, the connection pool and versioned migrations."""
