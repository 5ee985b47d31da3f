"""The control plane's composition root: build the adapters and services from settings, start them, stop them.

This is the only package that knows which adapter implements which port; the API (`api/app.py`, `api/deps.py`)
and through it `edgectl server` use what it builds. It sits between the API and the services: it may import
adapters and services, and it must never be imported by services, domain or adapters (import-linter), nor hold
request logic. Each module wires one concern; `start.py` calls them in order and owns the start and stop order.
"""

from control_plane.runtime.start import Runtime, start_runtime, utc_now

__all__ = ["Runtime", "start_runtime", "utc_now"]
