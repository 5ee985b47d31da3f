"""KServe v2 (Open Inference Protocol) JSON endpoints over the core's serving table.

Routes are thin: parse, take one table snapshot, run on the runner found there (in FastAPI's thread pool), answer.
Taking the snapshot once is what makes a version switch safe for in-flight requests. A bad request is a 400
with a message, never a 500; every answer says which version produced it (body `model_version`, header
`X-Model-Version`).
Telemetry (what the rollout gates read): every answered request and every runtime failure (500) of a model
version is counted; a request refused as bad input (4xx) is the client's error and is not counted at all.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from edge_agent.core.errors import InferenceInputError, RunnerError
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable
from edge_agent.core.telemetry import RequestWindow
from edge_agent.core.tensors import V2_DTYPES, TensorSpec, v2_datatype
from edge_agent.protocol.validation import describe_error

PLATFORM = "onnxruntime"
MAX_ELEMENTS = 16_000_000


class InferInput(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=256)
    shape: list[int] = Field(max_length=16)
    datatype: str
    data: list[Any]


class InferRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, max_length=256)
    inputs: list[InferInput] = Field(min_length=1, max_length=64)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def create_app(table: ServingTable, window: RequestWindow, clock: Callable[[], float] = time.monotonic) -> FastAPI:
    app = FastAPI(title="edge-agent inference (KServe v2)")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        return JSONResponse(
            {"error": f"invalid request: {describe_error(first, skip=('body',), root='body')}"}, status_code=400
        )

    @app.exception_handler(BadRequest)
    async def _bad(_request: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"error": exc.message}, status_code=exc.status)

    @app.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready() -> JSONResponse:
        is_ready = table.current().ready
        return JSONResponse({"ready": is_ready}, status_code=200 if is_ready else 503)

    @app.get("/v2/models/{name}")
    def metadata(name: str) -> dict[str, Any]:
        return _metadata(table, name)

    @app.get("/v2/models/{name}/ready")
    def model_ready(name: str) -> JSONResponse:
        _served(table, name)
        return JSONResponse({"name": name, "ready": True})

    @app.post("/v2/models/{name}/infer")
    def infer(name: str, body: InferRequest) -> JSONResponse:
        return _infer(_served(table, name).active, body, window, clock)

    @app.post("/v2/models/{name}/versions/{version}/infer")
    def infer_version(name: str, version: int, body: InferRequest) -> JSONResponse:
        loaded = _served(table, name).by_version(version)
        if loaded is None:
            raise BadRequest(f"model {name!r} has no loaded version {version}", status=404)
        return _infer(loaded, body, window, clock)

    return app


def _served(table: ServingTable, name: str) -> ServedModel:
    snapshot = table.current()
    served = snapshot.models.get(name)
    if served is None:
        if name in snapshot.expected:
            raise BadRequest(f"model {name!r} is not loaded", status=503)
        raise BadRequest(f"unknown model {name!r}", status=404)
    return served


def _metadata(table: ServingTable, name: str) -> dict[str, Any]:
    served = _served(table, name)
    runner = served.active.runner
    versions = [str(m.version) for m in (served.active, served.previous) if m is not None]
    return {
        "name": name,
        "versions": versions,
        "platform": PLATFORM,
        "inputs": [_tensor_meta(spec) for spec in runner.inputs],
        "outputs": [_tensor_meta(spec) for spec in runner.outputs],
    }


def _tensor_meta(spec: TensorSpec) -> dict[str, Any]:
    return {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}


def _infer(loaded: LoadedModel, body: InferRequest, window: RequestWindow, clock: Callable[[], float]) -> JSONResponse:
    feeds = _feeds(loaded, body)
    started = time.perf_counter()
    try:
        outputs = loaded.runner.run(feeds)
    except InferenceInputError as exc:  # the client's mistake (4xx): not a model error, not in the gates' counts
        raise BadRequest(f"model {loaded.name!r} cannot take this input: {exc}") from exc
    except RunnerError as exc:
        window.record(clock(), loaded.name, loaded.version, 0.0, ok=False)
        raise BadRequest(f"model {loaded.name!r} failed: {exc}", status=500) from exc
    latency_ms = (time.perf_counter() - started) * 1000
    window.record(clock(), loaded.name, loaded.version, latency_ms, ok=True)
    answer: dict[str, Any] = {
        "model_name": loaded.name,
        "model_version": str(loaded.version),
        "outputs": [_output(name, value) for name, value in outputs.items()],
    }
    if body.id is not None:
        answer["id"] = body.id
    return JSONResponse(answer, headers={"X-Model-Version": str(loaded.version)})


def _feeds(loaded: LoadedModel, body: InferRequest) -> dict[str, np.ndarray]:
    specs = {spec.name: spec for spec in loaded.runner.inputs}
    feeds: dict[str, np.ndarray] = {}
    for item in body.inputs:
        spec = specs.get(item.name)
        if spec is None:
            raise BadRequest(f"model {loaded.name!r} has no input {item.name!r}; its inputs are {sorted(specs)}")
        feeds[item.name] = _tensor(item, spec)
    missing = sorted(set(specs) - set(feeds))
    if missing:
        raise BadRequest(f"missing input(s) {missing} for model {loaded.name!r}")
    return feeds


def _tensor(item: InferInput, spec: TensorSpec) -> np.ndarray:
    if spec.datatype not in V2_DTYPES:
        raise BadRequest(f"input {item.name!r} has type {spec.datatype}, which this server does not take as JSON")
    if item.datatype != spec.datatype:
        raise BadRequest(f"input {item.name!r} must be {spec.datatype}, got {item.datatype}")
    if any(dim < 0 for dim in item.shape) or not spec.accepts_shape(item.shape):
        raise BadRequest(f"input {item.name!r} has shape {item.shape}; the model takes {list(spec.shape)} (-1: any)")
    count = math.prod(item.shape)
    if count > MAX_ELEMENTS:
        raise BadRequest(f"input {item.name!r} has {count} elements, over the limit of {MAX_ELEMENTS}")
    try:
        array = np.asarray(item.data, dtype=V2_DTYPES[spec.datatype]).ravel()
    except (ValueError, TypeError, OverflowError) as exc:
        raise BadRequest(f"input {item.name!r}: data is not a list of {spec.datatype} values ({exc})") from exc
    if array.size != count:
        raise BadRequest(f"input {item.name!r}: shape {item.shape} needs {count} values, got {array.size}")
    return array.reshape(item.shape)


def _output(name: str, value: np.ndarray) -> dict[str, Any]:
    return {
        "name": name,
        "shape": list(value.shape),
        "datatype": v2_datatype(value.dtype),
        "data": value.ravel().tolist(),
    }
