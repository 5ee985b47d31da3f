"""`edgectl` command groups, one module per REST resource of docs/api.md."""
