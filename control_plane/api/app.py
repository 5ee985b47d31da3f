"""The FastAPI application: `create_app(settings)`; its lifespan starts and stops everything behind the routes.

Startup creates the data dir and the signing key, migrates the database to head, connects to the broker and
fails interrupted training jobs; shutdown disconnects and stops workers. No module-level app or settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from control_plane.api.container import start_runtime
from control_plane.api.errors import install_error_handlers
from control_plane.api.routes import (
    builders,
    builds,
    devices,
    models,
    playbook_runs,
    rollout_events,
    rollouts,
    system,
    training,
)
from control_plane.settings import ServerSettings


def create_app(settings: ServerSettings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await run_in_threadpool(start_runtime, settings)
        app.state.runtime = runtime
        try:
            yield
        finally:
            await run_in_threadpool(runtime.close)

    app = FastAPI(
        title="Edge orchestrator control plane",
        version="1",
        description="Registry, builds, fleet, rollouts and training of the hybrid edge-cloud orchestrator.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    for module in (system, models, builds, builders, devices, rollouts, rollout_events, training, playbook_runs):
        app.include_router(module.router)
    return app
