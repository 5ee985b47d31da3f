"""The Open Inference Protocol's REST routes (KServe v2) over the core's serving table.

Routes are thin: resolve the model version from one table snapshot (taking it once is what makes a hot swap safe
for in-flight requests), read the body within its limit, then decode, run and encode in the thread pool
(inference.py). Every path the spec names exists unversioned and under `/versions/{version}`; a version the agent
does not hold is a 404. Must never parse a body before its size is known to be under the limit (body.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

import edge_agent
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable
from edge_agent.core.telemetry import RequestWindow
from edge_agent.core.tensors import TensorSpec
from edge_agent.serving.body import read_body
from edge_agent.serving.codec import BINARY_EXTENSION, HEADER_LENGTH, ServingLimits, parse_header_length
from edge_agent.serving.errors import ProtocolError
from edge_agent.serving.inference import handle

SERVER_NAME = "edge-agent"
PLATFORM = "onnxruntime"
EXTENSIONS = (BINARY_EXTENSION,)
MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"


def build_router(
    table: ServingTable, window: RequestWindow, clock: Callable[[], float], limits: ServingLimits
) -> APIRouter:
    router = APIRouter()

    @router.get("/v2")
    @router.get("/v2/", include_in_schema=False)
    def server_metadata() -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": edge_agent.__version__, "extensions": list(EXTENSIONS)}

    @router.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @router.get("/v2/health/ready")
    def ready() -> JSONResponse:
        is_ready = table.current().ready
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @router.get(MODEL)
    def metadata(name: str) -> dict[str, Any]:
        served = served_model(table, name)
        return _metadata(served, served.active)

    @router.get(VERSIONED)
    def version_metadata(name: str, version: str) -> dict[str, Any]:
        served = served_model(table, name)
        return _metadata(served, loaded_version(served, version))

    @router.get(MODEL + "/ready")
    def model_ready(name: str) -> dict[str, Any]:
        served_model(table, name)
        return {"name": name, "ready": True}

    @router.get(VERSIONED + "/ready")
    def version_ready(name: str, version: str) -> dict[str, Any]:
        loaded_version(served_model(table, name), version)
        return {"name": name, "ready": True}

    async def run(loaded: LoadedModel, request: Request) -> Response:
        header_length = parse_header_length(request.headers.get(HEADER_LENGTH))
        body = await read_body(request, limits.body_limit(binary=header_length is not None))
        return await run_in_threadpool(handle, loaded, body, header_length, limits, window, clock)

    @router.post(MODEL + "/infer")
    async def infer(name: str, request: Request) -> Response:
        return await run(served_model(table, name).active, request)

    @router.post(VERSIONED + "/infer")
    async def version_infer(name: str, version: str, request: Request) -> Response:
        return await run(loaded_version(served_model(table, name), version), request)

    return router


def served_model(table: ServingTable, name: str) -> ServedModel:
    snapshot = table.current()
    served = snapshot.models.get(name)
    if served is not None:
        return served
    if name in snapshot.expected:
        raise ProtocolError(f"model {name!r} is not loaded yet; ask again when GET /v2/health/ready answers 200", 503)
    known = sorted(snapshot.models)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; this agent serves: {', '.join(known[:20]) or 'none'}"
    raise ProtocolError(f"unknown model {name[:256]!r}{hint}", 404)


def loaded_version(served: ServedModel, version: str) -> LoadedModel:
    loaded = served.by_version(int(version)) if version.isdigit() and len(version) < 19 else None
    if loaded is None:
        held = ", ".join(_versions(served))
        raise ProtocolError(f"model {served.active.name!r} has no version {version[:40]!r}; it serves {held}", 404)
    return loaded


def _versions(served: ServedModel) -> list[str]:
    return [str(m.version) for m in (served.active, served.previous) if m is not None]


def _metadata(served: ServedModel, loaded: LoadedModel) -> dict[str, Any]:
    return {
        "name": loaded.name,
        "versions": _versions(served),
        "platform": PLATFORM,
        "inputs": [_tensor_meta(spec) for spec in loaded.runner.inputs],
        "outputs": [_tensor_meta(spec) for spec in loaded.runner.outputs],
    }


def _tensor_meta(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
