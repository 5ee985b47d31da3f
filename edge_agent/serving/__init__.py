"""The inference API: the Open Inference Protocol (KServe v2) over HTTP, JSON and binary tensors."""
