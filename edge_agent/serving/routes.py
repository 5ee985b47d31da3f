"""The Open Inference Protocol's REST routes (KServe v2) over the core's serving table.

Routes are thin: resolve the model version from one table snapshot (taking it once is what makes a hot swap safe
for in-flight requests), check the declared body size, take a place if the body is large (admission.py), read the
body within its limit and deadline, then decode, run and encode in the thread pool (inference.py). Every path the
spec names exists unversioned and under `/versions/{version}`; a version the agent does not hold is a 404. Must
never parse a body before its size is known to be under the limit (body.py).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool

import edge_agent
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable, TableSnapshot
from edge_agent.core.telemetry import RequestWindow
from edge_agent.core.tensors import TensorSpec
from edge_agent.serving.admission import LargeRequests
from edge_agent.serving.body import declared_length, read_body
from edge_agent.serving.codec import BINARY_EXTENSION, HEADER_LENGTH, parse_header_length
from edge_agent.serving.errors import ProtocolError
from edge_agent.serving.inference import handle
from edge_agent.serving.limits import ServingLimits

SERVER_NAME = "edge-agent"
PLATFORM = "onnxruntime"
EXTENSIONS = (BINARY_EXTENSION,)
MODEL = "/v2/models/{name}"
VERSIONED = "/v2/models/{name}/versions/{version}"


def build_router(
    table: ServingTable, window: RequestWindow, clock: Callable[[], float], limits: ServingLimits
) -> APIRouter:
    router = APIRouter()
    large = LargeRequests(limits)

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
        served = served_model(table.current(), name)
        return _metadata(served, served.active)

    @router.get(VERSIONED)
    def version_metadata(name: str, version: str) -> dict[str, Any]:
        snapshot = table.current()
        return _metadata(served_model(snapshot, name), loaded_version(snapshot, name, version))

    @router.get(MODEL + "/ready")
    def model_ready(name: str) -> dict[str, Any]:
        served_model(table.current(), name)
        return {"name": name, "ready": True}

    @router.get(VERSIONED + "/ready")
    def version_ready(name: str, version: str) -> dict[str, Any]:
        loaded_version(table.current(), name, version)
        return {"name": name, "ready": True}

    async def run(loaded: LoadedModel, request: Request) -> Response:
        header_length = parse_header_length(request.headers.get(HEADER_LENGTH))
        limit = limits.body_limit(binary=header_length is not None)
        with large.admitted(declared_length(request, limit)):
            body = await read_body(request, limit, limits.body_timeout_s)
            return await run_in_threadpool(handle, loaded, body, header_length, limits, window, clock)

    @router.post(MODEL + "/infer")
    async def infer(name: str, request: Request) -> Response:
        return await run(served_model(table.current(), name).active, request)

    @router.post(VERSIONED + "/infer")
    async def version_infer(name: str, version: str, request: Request) -> Response:
        return await run(loaded_version(table.current(), name, version), request)

    return router


def served_model(snapshot: TableSnapshot, name: str) -> ServedModel:
    served = snapshot.models.get(name)
    if served is not None:
        return served
    if name in snapshot.expected:
        raise ProtocolError(f"model {name!r} is not loaded yet; ask again when GET /v2/health/ready answers 200", 503)
    known = sorted(snapshot.models)
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; this agent serves: {', '.join(known[:20]) or 'none'}"
    raise ProtocolError(f"unknown model {name[:256]!r}{hint}", 404)


def loaded_version(snapshot: TableSnapshot, name: str, version: str) -> LoadedModel:
    served = served_model(snapshot, name)
    number = int(version) if version.isascii() and version.isdigit() and len(version) < 19 else None
    loaded = served.by_version(number) if number is not None else None
    if loaded is not None:
        return loaded
    if number is not None and snapshot.restoring.get(name) == number:
        raise ProtocolError(
            f"model {name!r} version {number} (its previous version, kept for a rollback) is being loaded again "
            "after the agent restarted; ask again shortly",
            503,
            {"Retry-After": "1"},
        )
    held = ", ".join(_versions(served))
    raise ProtocolError(f"model {served.active.name!r} has no version {version[:40]!r}; it serves {held}", 404)


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
