"""Small, dependency-free helpers. Nothing here imports a Quarterdeck domain."""
