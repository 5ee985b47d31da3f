"""`serve(settings)`: run the API with uvicorn until SIGTERM/SIGINT, then shut down cleanly (lifespan exit)."""

from __future__ import annotations

import logging

import uvicorn

from control_plane.api.app import create_app
from control_plane.settings import ServerSettings


def serve(settings: ServerSettings) -> None:
    """Blocking. uvicorn installs the SIGTERM/SIGINT handlers and runs the lifespan shutdown on either."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    uvicorn.Server(config).run()
