"""The inference API (Open Inference Protocol / KServe v2 over HTTP+JSON)."""
