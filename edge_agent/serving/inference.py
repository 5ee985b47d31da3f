"""One inference on one loaded model version: check the decoded inputs against the model, run, encode the answer.

Runs in FastAPI's thread pool on the version the route resolved once (a hot swap never fails it). Telemetry (what
the rollout gates read): every answered request and every runtime failure (500) of a model version is counted; a
request refused as bad input (4xx) is the client's error and is not counted at all.
Must never run the model on inputs whose names, datatypes or shapes the model does not declare.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping

import numpy as np
from starlette.responses import Response

from edge_agent.core.errors import InferenceInputError, RunnerError
from edge_agent.core.serving_table import LoadedModel
from edge_agent.core.telemetry import RequestWindow
from edge_agent.core.tensors import TensorSpec, v2_datatype
from edge_agent.serving.codec import (
    HEADER_LENGTH,
    DecodedRequest,
    OutputTensor,
    decode_request,
    encode_response,
)
from edge_agent.serving.errors import ProtocolError
from edge_agent.serving.limits import ServingLimits

VERSION_HEADER = "X-Model-Version"


def handle(
    loaded: LoadedModel,
    body: bytes,
    header_length: int | None,
    limits: ServingLimits,
    window: RequestWindow,
    clock: Callable[[], float],
) -> Response:
    request = decode_request(body, header_length, limits)
    feeds = _feeds(loaded, request.inputs)
    wanted = _wanted(loaded, request)
    started = time.perf_counter()
    try:
        results = loaded.runner.run(feeds)
        head = {"model_name": loaded.name, "model_version": str(loaded.version)}
        if request.id is not None:
            head["id"] = request.id
        encoded = encode_response(head, [OutputTensor(name, results[name], binary) for name, binary in wanted])
    except InferenceInputError as exc:  # the client's mistake (4xx): not a model error, not in the gates' counts
        raise ProtocolError(f"model {loaded.name!r} cannot take this input: {exc}") from exc
    except (RunnerError, ProtocolError) as exc:
        window.record(clock(), loaded.name, loaded.version, 0.0, ok=False)
        message = exc.message if isinstance(exc, ProtocolError) else f"model {loaded.name!r} failed: {exc}"
        raise ProtocolError(message, 500) from exc
    window.record(clock(), loaded.name, loaded.version, (time.perf_counter() - started) * 1000, ok=True)
    headers = {VERSION_HEADER: str(loaded.version)}
    if encoded.header_length is None:
        return Response(encoded.body, media_type="application/json", headers=headers)
    headers[HEADER_LENGTH] = str(encoded.header_length)
    return Response(encoded.body, media_type="application/octet-stream", headers=headers)


def _feeds(loaded: LoadedModel, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    specs = {spec.name: spec for spec in loaded.runner.inputs}
    for name, array in inputs.items():
        spec = specs.get(name)
        if spec is None:
            raise ProtocolError(f"model {loaded.name!r} has no input {name!r}; its inputs are {sorted(specs)}")
        _check(name, array, spec)
    missing = sorted(set(specs) - set(inputs))
    if missing:
        raise ProtocolError(f"missing input(s) {missing} for model {loaded.name!r}")
    return dict(inputs)


def _check(name: str, array: np.ndarray, spec: TensorSpec) -> None:
    datatype = v2_datatype(array.dtype)
    if datatype != spec.datatype:
        raise ProtocolError(f"input {name!r} must be {spec.datatype}, got {datatype}")
    if not spec.accepts_shape(array.shape):
        wanted = list(spec.shape)
        raise ProtocolError(f"input {name!r} has shape {list(array.shape)}; the model takes {wanted} (-1: any)")


def _wanted(loaded: LoadedModel, request: DecodedRequest) -> list[tuple[str, bool]]:
    names = [spec.name for spec in loaded.runner.outputs]
    if request.outputs is None:
        return [(name, request.binary_output) for name in names]
    unknown = sorted({o.name for o in request.outputs} - set(names))
    if unknown:
        raise ProtocolError(f"model {loaded.name!r} has no output(s) {unknown}; its outputs are {names}")
    return [(o.name, o.binary) for o in request.outputs]
