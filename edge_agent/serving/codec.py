"""Inference request and response bodies of the Open Inference Protocol: JSON, and the binary tensor data extension.

A binary request (header `Inference-Header-Content-Length: N`) is an N-byte JSON header followed by the raw
little-endian bytes of the inputs that carry `parameters.binary_data_size`, in input order; a binary response is
laid out the same way for the outputs asked for with `binary_data: true` (or request-level `binary_data_output`).

Pure (numpy, json, pydantic): no HTTP here, so every hostile body can be tried in a unit test. What it must never
do is allocate for a tensor before its element count (from the shape) is under the limit, let declared sizes
disagree with the body, or accept a non-finite number (NaN, Infinity, or a value past the datatype's range, e.g.
1e39 as FP32): each is a ProtocolError (400) that names the input and what is wrong.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.core.tensors import V2_DTYPES, v2_datatype
from edge_agent.protocol.validation import describe_error
from edge_agent.serving.errors import ProtocolError
from edge_agent.serving.limits import ServingLimits

HEADER_LENGTH = "Inference-Header-Content-Length"
BINARY_EXTENSION = "binary_tensor_data"
MAX_DIMS = 16
# Which numpy kinds JSON data may arrive as for each datatype family (inferred by np.asarray): no strings, no
# objects (integers past 64 bits), no floats into an integer tensor, only true/false into BOOL.
_JSON_KINDS = {"f": "fiu", "i": "iu", "u": "iu", "b": "b"}


class InputWire(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=256)
    shape: list[int] = Field(max_length=MAX_DIMS)
    datatype: str = Field(max_length=32)
    parameters: dict[str, Any] = Field(default_factory=dict)
    data: Any = None


class OutputWire(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1, max_length=256)
    parameters: dict[str, Any] = Field(default_factory=dict)


class RequestWire(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str | None = Field(default=None, max_length=256)
    parameters: dict[str, Any] = Field(default_factory=dict)
    inputs: list[InputWire] = Field(min_length=1, max_length=64)
    outputs: list[OutputWire] | None = Field(default=None, max_length=64)


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool


@dataclass(frozen=True)
class DecodedRequest:
    id: str | None
    inputs: Mapping[str, np.ndarray]
    # None: every output of the model, binary as `binary_output` says.
    outputs: tuple[RequestedOutput, ...] | None
    binary_output: bool


@dataclass(frozen=True)
class OutputTensor:
    name: str
    value: np.ndarray
    binary: bool


@dataclass(frozen=True)
class EncodedResponse:
    body: bytes
    header_length: int | None  # set when binary tensors follow the JSON header


def parse_header_length(raw: str | None) -> int | None:
    if raw is None:
        return None
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:  # '²' is a digit to isdigit, not to int()
        raise ProtocolError(f"{HEADER_LENGTH} must be a byte count (digits only), got {raw[:40]!r}")
    return int(text)


def decode_request(body: bytes, header_length: int | None, limits: ServingLimits) -> DecodedRequest:
    """The request in `body`; `header_length` is the JSON header's size when binary tensors follow it."""
    end = len(body) if header_length is None else header_length
    if end > len(body):
        raise ProtocolError(f"{HEADER_LENGTH} is {end} bytes, past the end of the {len(body)}-byte body")
    if end > limits.max_json_bytes:
        raise ProtocolError(f"the JSON header is {end} bytes, over the limit of {limits.max_json_bytes}", 413)
    wire = _request_wire(_load_json(body[:end]))
    inputs: dict[str, np.ndarray] = {}
    offset = end
    for item in wire.inputs:
        if item.name in inputs:
            raise ProtocolError(f"input {item.name!r} is given twice")
        count = _element_count(item, limits)
        size = _binary_size(item.parameters, f"input {item.name!r}")
        if size is None:
            inputs[item.name] = _from_json(item, count)
            continue
        if header_length is None:
            raise ProtocolError(f"input {item.name!r} has binary_data_size but the request has no {HEADER_LENGTH}")
        if item.data is not None:
            raise ProtocolError(f"input {item.name!r} has both data and binary_data_size; send one")
        if size > len(body) - offset:
            raise ProtocolError(
                f"input {item.name!r}: binary_data_size {size} goes past the end of the body "
                f"({len(body) - offset} bytes left)"
            )
        inputs[item.name] = _from_binary(item, body, offset, size, count)
        offset += size
    if offset != len(body):
        raise ProtocolError(
            f"the body has {len(body) - offset} bytes after the tensors the header declares; "
            "the header and the binary_data_size of each input must add up to the body exactly"
        )
    binary_output = _flag(wire.parameters, "binary_data_output", "request parameter")
    return DecodedRequest(wire.id, inputs, _outputs(wire.outputs, binary_output), binary_output)


def encode_response(head: Mapping[str, Any], outputs: Sequence[OutputTensor]) -> EncodedResponse:
    """The JSON answer, with binary outputs after it; a ProtocolError (500) for an output JSON cannot carry."""
    described: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in outputs:
        value = output.value
        try:
            datatype = v2_datatype(value.dtype)
        except ValueError as exc:
            raise ProtocolError(f"output {output.name!r}: {exc}", 500) from exc
        entry: dict[str, Any] = {"name": output.name, "datatype": datatype, "shape": list(value.shape)}
        if output.binary:
            blob = np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<")).tobytes()
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            if value.dtype.kind == "f" and not bool(np.isfinite(value).all()):
                raise ProtocolError(
                    f"output {output.name!r} holds NaN or Infinity, which JSON cannot carry; "
                    "ask for it with parameters.binary_data: true",
                    500,
                )
            entry["data"] = value.ravel().tolist()
        described.append(entry)
    header = json.dumps({**head, "outputs": described}, separators=(",", ":"), allow_nan=False).encode()
    if not blobs:
        return EncodedResponse(header, None)
    return EncodedResponse(b"".join([header, *blobs]), len(header))


def _refuse_constant(name: str) -> Any:
    raise ProtocolError(f"{name} is not a number this server takes: every value must be finite")


def _load_json(header: bytes) -> Any:
    try:
        return json.loads(header, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, int digits limit
        raise ProtocolError(f"invalid request: the body is not JSON ({str(exc)[:200]})") from exc


def _request_wire(document: Any) -> RequestWire:
    try:
        return RequestWire.model_validate(document)
    except ValidationError as exc:
        errors = exc.errors()
        raise ProtocolError(f"invalid request: {describe_error(errors[0] if errors else {}, root='body')}") from exc


def _element_count(item: InputWire, limits: ServingLimits) -> int:
    if item.datatype not in V2_DTYPES:
        if item.datatype == "BYTES":
            raise ProtocolError(f"input {item.name!r} is BYTES; this server's models take numeric tensors only")
        raise ProtocolError(f"input {item.name!r} has datatype {item.datatype!r}; known: {', '.join(V2_DTYPES)}")
    if any(dim < 0 for dim in item.shape):
        raise ProtocolError(f"input {item.name!r} has shape {item.shape}: dimensions cannot be negative")
    count = math.prod(item.shape)  # Python integers: no overflow, however large the dimensions
    if count > limits.max_elements:
        raise ProtocolError(
            f"input {item.name!r} has shape {item.shape} ({count} elements), over the limit of {limits.max_elements}"
        )
    return count


def _binary_size(parameters: Mapping[str, Any], what: str) -> int | None:
    size = parameters.get("binary_data_size")
    if size is None:
        return None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise ProtocolError(f"{what}: binary_data_size must be a byte count, got {str(size)[:40]}")
    return size


def _flag(parameters: Mapping[str, Any], key: str, what: str, default: bool = False) -> bool:
    value = parameters.get(key, default)
    if not isinstance(value, bool):
        raise ProtocolError(f"{what} {key} must be true or false, got {str(value)[:40]}")
    return value


def _outputs(wire: list[OutputWire] | None, binary_output: bool) -> tuple[RequestedOutput, ...] | None:
    if not wire:  # absent or empty: every output, as Triton reads it
        return None
    wanted = tuple(
        RequestedOutput(o.name, _flag(o.parameters, "binary_data", f"output {o.name!r}:", binary_output)) for o in wire
    )
    if len({o.name for o in wanted}) != len(wanted):
        raise ProtocolError("an output is asked for twice")
    return wanted


def _from_json(item: InputWire, count: int) -> np.ndarray:
    if not isinstance(item.data, list):
        raise ProtocolError(f"input {item.name!r} has no data: give `data` (a list) or parameters.binary_data_size")
    try:
        raw = np.asarray(item.data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise ProtocolError(f"input {item.name!r}: data is not a rectangular list of numbers") from exc
    if raw.size != count:
        raise ProtocolError(f"input {item.name!r}: shape {item.shape} needs {count} values, got {raw.size}")
    dtype = V2_DTYPES[item.datatype]
    if raw.size and raw.dtype.kind not in _JSON_KINDS[dtype.kind]:
        raise ProtocolError(f"input {item.name!r}: data is not a list of {item.datatype} values")
    if dtype.kind in "iu" and raw.size:
        bounds = np.iinfo(dtype.str)  # the dtype's name: iinfo's typing takes no generic dtype
        if int(raw.min()) < bounds.min or int(raw.max()) > bounds.max:
            raise ProtocolError(f"input {item.name!r}: a value is out of the range of {item.datatype}")
    with np.errstate(over="ignore", invalid="ignore"):  # a value past FP32's range becomes inf: refused below
        array = raw.astype(dtype).reshape(item.shape)
    return _finite(item, array)


def _from_binary(item: InputWire, body: bytes, offset: int, size: int, count: int) -> np.ndarray:
    dtype = V2_DTYPES[item.datatype]
    if size != count * dtype.itemsize:
        raise ProtocolError(
            f"input {item.name!r}: binary_data_size is {size} bytes; shape {item.shape} of {item.datatype} "
            f"needs {count * dtype.itemsize}"
        )
    if dtype.kind == "b":  # any non-zero byte is true, as numpy and Triton read it
        return np.frombuffer(body, np.uint8, count, offset).astype(np.bool_).reshape(item.shape)
    array = np.frombuffer(body, dtype.newbyteorder("<"), count, offset).reshape(item.shape)
    if not array.dtype.isnative:
        array = array.astype(dtype)
    return _finite(item, array)


def _finite(item: InputWire, array: np.ndarray) -> np.ndarray:
    if array.dtype.kind == "f" and not bool(np.isfinite(array).all()):
        raise ProtocolError(
            f"input {item.name!r} holds a value that is not a finite {item.datatype} number "
            "(NaN, Infinity, or past the datatype's range such as 1e39 for FP32)"
        )
    return array
