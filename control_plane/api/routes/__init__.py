"""REST routes, one module per resource (docs/api.md)."""
