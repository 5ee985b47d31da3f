"""The agent's decisions and its apply pipeline, written against ports (typing.Protocol).

Nothing here imports paho, httpx, onnxruntime, FastAPI or uvicorn (import-linter enforces it): a fleet simulator
runs thousands of these cores in one process with fake ports. No globals, no module-level settings; clocks are
injected.
"""
