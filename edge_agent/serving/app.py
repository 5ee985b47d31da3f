"""The agent's inference API: the Open Inference Protocol (KServe v2) over HTTP, JSON and binary tensors.

Assembles the app: the protocol's routes (routes.py) and the answers to every refusal in the protocol's error shape
`{"error": "..."}`, FastAPI's own (unknown path, wrong method, invalid parameter) included. Every answer of an
inference says which version produced it (body `model_version`, header `X-Model-Version`). Other routes (the
Prometheus `/metrics`) are included by the daemon. Must never answer a client's mistake with a 5xx.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from edge_agent.core.serving_table import ServingTable
from edge_agent.core.telemetry import RequestWindow
from edge_agent.protocol.validation import describe_error
from edge_agent.serving.errors import ProtocolError
from edge_agent.serving.limits import ServingLimits
from edge_agent.serving.routes import build_router


def create_app(
    table: ServingTable,
    window: RequestWindow,
    clock: Callable[[], float] = time.monotonic,
    limits: ServingLimits | None = None,
) -> FastAPI:
    app = FastAPI(title="edge-agent inference (Open Inference Protocol / KServe v2)")
    _install_error_handlers(app)
    app.include_router(build_router(table, window, clock, limits or ServingLimits()))
    return app


def _error(message: str, status: int, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ProtocolError)
    async def _protocol(_request: Request, exc: ProtocolError) -> JSONResponse:
        return _error(exc.message, exc.status, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        return _error(f"invalid request: {describe_error(errors[0] if errors else {}, root='request')}", 400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = str(exc.detail)
        if exc.status_code == 404:
            message = f"no such endpoint: {request.method} {request.url.path[:200]} (the API is under /v2)"
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path[:200]}"
        return _error(message, exc.status_code, exc.headers)
