"""The FastAPI application: `create_app(settings)`; its lifespan starts and stops everything behind the routes.

Startup creates the data dir and the signing key, migrates the database to head, connects to the broker and
fails interrupted training jobs; shutdown disconnects and stops workers. No module-level app or settings.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.openapi.utils import get_openapi
from starlette.concurrency import run_in_threadpool

from control_plane.api.audit_trail import AuditTrail
from control_plane.api.auth import AuthenticateBeforeBody, authorize
from control_plane.api.body_limits import install_body_limits
from control_plane.api.errors import document_error_detail, install_error_handlers
from control_plane.api.metrics import install_metrics
from control_plane.api.metrics import router as metrics_router
from control_plane.api.permissions import Access, requirement
from control_plane.api.routes import (
    audit,
    broker,
    builders,
    builds,
    devices,
    enrollment,
    identity,
    labels,
    models,
    playbook_runs,
    rollout_events,
    rollouts,
    system,
    training,
    tunnels,
)
from control_plane.runtime import start_runtime
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
        dependencies=[Depends(authorize)],
    )
    install_error_handlers(app)
    install_body_limits(app, settings.max_upload_bytes, settings.max_body_bytes)
    app.add_middleware(AuthenticateBeforeBody)
    app.add_middleware(AuditTrail)  # added last: outermost, so it records AuthenticateBeforeBody's refusals too
    install_metrics(app)  # outermost: request durations include authentication and the audit record
    routers = (
        system,
        identity,
        models,
        builds,
        builders,
        devices,
        labels,
        enrollment,
        broker,
        rollouts,
        rollout_events,
        training,
        playbook_runs,
        audit,
        tunnels,
    )
    for module in routers:
        app.include_router(module.router)
    app.include_router(metrics_router)
    app.openapi = lambda: _openapi_with_security(app)  # type: ignore[method-assign]
    return app


def _openapi_with_security(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the bearer scheme and, on each operation, its requirement from the table."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {})["securitySchemes"] = {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "A token from `edgectl tokens create` (or data_dir/admin-token), or an SSO JWT.",
        }
    }
    for path, operations in schema.get("paths", {}).items():
        for method, operation in operations.items():
            needed = requirement(method, path)
            operation["security"] = [] if needed is Access.ANONYMOUS else [{"bearer": []}]
            operation["x-permission"] = needed.value if needed is not None else "undeclared"
    document_error_detail(schema)
    app.openapi_schema = schema
    return schema
