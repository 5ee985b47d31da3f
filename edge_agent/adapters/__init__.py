"""Adapters: the agent's only contact with libraries and the host (paho, httpx, onnxruntime, nvidia-smi, /proc).

Each third-party SDK is imported by exactly one module here; the core never imports this package.
"""
