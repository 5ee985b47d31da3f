"""ONNX external data: which files a model names, whether a name is safe to send, and folding them into one file.

`torch.onnx.export` (torch 2.13's default) writes `model.onnx` plus `model.onnx.data`: the initializers' bytes live in
a second file the model names by a relative *location*. The CLI reads those locations to send the files along
(`referenced_locations`, `location_refusal`); the control plane inlines them (`inline_external_data`, run in the
`ort_sandbox` child) and stores one self-contained model, so nothing downstream ever meets external data.

Everything here works on untrusted input. A location is only ever a key into the mapping of files that were
uploaded: it is never joined to a directory, so `../../etc/passwd`, an absolute path or a symlink name reach nothing.
Every tensor's bytes must lie inside its file and be exactly as many as its shape and type need. Any defect is an
`InvalidModel` whose text names the tensor and the location, never a host path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import onnx

from model_builds.onnx_model import InvalidModel

PROTOBUF_LIMIT = 2**31 - 1  # protobuf refuses to serialise a message of 2 GiB or more
MAX_FILES = 64
MAX_LOCATION_CHARS = 255


@dataclass(frozen=True)
class ExternalSlice:
    """Where one initializer's bytes are: `length` None means "to the end of the file"."""

    tensor: str
    location: str
    offset: int
    length: int | None


def location_refusal(location: str) -> str | None:
    """Why `location` may not name an external data file (None: it may): it must be a relative path inside the
    model's folder, written with '/', without '..', without empty or hidden-traversal parts."""
    if not location or len(location) > MAX_LOCATION_CHARS:
        return f"must be 1-{MAX_LOCATION_CHARS} characters"
    if "\\" in location or "\x00" in location or ":" in location:
        return "must be a relative path written with '/' (no '\\', ':' or NUL)"
    path = PurePosixPath(location)
    if path.is_absolute():
        return "is an absolute path; external data must lie next to the model"
    if any(part in ("..", ".", "") for part in location.split("/")):
        return "must not contain '..', '.' or empty parts; external data must lie next to the model"
    return None


def _slice_of(tensor: onnx.TensorProto) -> ExternalSlice:
    fields = {entry.key: entry.value for entry in tensor.external_data}
    location = fields.get("location", "")
    try:
        offset = int(fields.get("offset") or 0)
        length = int(fields["length"]) if fields.get("length") else None
    except ValueError as exc:
        raise InvalidModel(f"initializer {tensor.name!r}: external data offset/length is not a number") from exc
    if offset < 0 or (length is not None and length < 0):
        raise InvalidModel(f"initializer {tensor.name!r}: external data offset/length is negative")
    return ExternalSlice(tensor.name, location, offset, length)


def _external_tensors(model: onnx.ModelProto) -> list[onnx.TensorProto]:
    """Every tensor of the graph's (and its subgraphs') initializers and constants that keeps its bytes outside."""
    from onnx.external_data_helper import _get_all_tensors

    return [t for t in _get_all_tensors(model) if t.data_location == onnx.TensorProto.EXTERNAL]


def external_slices(model: onnx.ModelProto) -> list[ExternalSlice]:
    return [_slice_of(t) for t in _external_tensors(model)]


def referenced_locations(model_path: Path) -> list[str] | None:
    """The distinct external data locations the model at `model_path` names, in order (None: the file does not
    parse as ONNX, and whoever validates it will say so); InvalidModel when a location is unsafe (checked before
    anything is sent)."""
    try:
        model = onnx.load_model(str(model_path), load_external_data=False)
    except Exception:  # protobuf raises DecodeError (and others) on arbitrary bytes
        return None
    locations = list(dict.fromkeys(s.location for s in external_slices(model)))
    for location in locations:
        refusal = location_refusal(location)
        if refusal is not None:
            raise InvalidModel(f"external data location {location!r} {refusal}")
    return locations


def _needed_bytes(tensor: onnx.TensorProto) -> int | None:
    """How many bytes the tensor's shape and type need (None for a type without a fixed width, like strings)."""
    if tensor.data_type == onnx.TensorProto.STRING:
        return None
    try:
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type)).itemsize
    except (KeyError, TypeError) as exc:
        raise InvalidModel(f"initializer {tensor.name!r} has an unsupported element type {tensor.data_type}") from exc
    count = math.prod(int(d) for d in tensor.dims)
    if tensor.data_type in (onnx.TensorProto.INT4, onnx.TensorProto.UINT4):
        return (count + 1) // 2
    return count * itemsize


def _read_slice(tensor: onnx.TensorProto, spot: ExternalSlice, path: Path) -> bytes:
    size = path.stat().st_size
    length = spot.length if spot.length is not None else max(0, size - spot.offset)
    what = f"initializer {tensor.name!r} (in {spot.location!r})"
    if spot.offset + length > size:
        raise InvalidModel(
            f"{what} needs bytes {spot.offset}..{spot.offset + length} but the file has {size} bytes; "
            "upload the data file the model was exported with"
        )
    needed = _needed_bytes(tensor)
    if needed is not None and length != needed:
        raise InvalidModel(f"{what} has {length} bytes; its shape {list(tensor.dims)} needs {needed}")
    with path.open("rb") as fh:
        fh.seek(spot.offset)
        return fh.read(length)


def inline_external_data(model_path: Path, files: Mapping[str, Path], destination: Path) -> None:
    """Write the model at `model_path` to `destination` with every external tensor's bytes taken from `files`
    (uploaded location -> file) and stored inside the model. Every uploaded file must be named by the model and
    every location the model names must have been uploaded; the result must fit protobuf's 2 GiB."""
    try:
        model = onnx.load_model(str(model_path), load_external_data=False)
    except Exception as exc:
        raise InvalidModel(f"not an ONNX model (protobuf parse failed: {exc})") from exc
    tensors = _external_tensors(model)
    slices = [_slice_of(t) for t in tensors]
    named = {s.location for s in slices}
    for location in sorted(named):
        refusal = location_refusal(location)
        if refusal is not None:
            raise InvalidModel(f"external data location {location!r} {refusal}")
        if location not in files:
            raise InvalidModel(
                f"the model keeps tensors in {location!r}, which was not uploaded with it "
                f"(uploaded: {sorted(files) or 'none'})"
            )
    unused = sorted(set(files) - named)
    if unused:
        raise InvalidModel(f"external data file(s) {unused} are not named by the model (it names {sorted(named)})")
    total = model.ByteSize() + sum(_length(s, files) for s in slices)
    if total > PROTOBUF_LIMIT:
        raise InvalidModel(
            f"the model with its external data is {total / 2**30:.2f} GiB; a self-contained ONNX model must stay "
            "under 2 GiB (protobuf's limit), so models this large are not supported"
        )
    for tensor, spot in zip(tensors, slices, strict=True):
        tensor.raw_data = _read_slice(tensor, spot, files[spot.location])
        tensor.data_location = onnx.TensorProto.DEFAULT
        del tensor.external_data[:]
    destination.write_bytes(model.SerializeToString())


def _length(spot: ExternalSlice, files: Mapping[str, Path]) -> int:
    if spot.length is not None:
        return spot.length
    return max(0, files[spot.location].stat().st_size - spot.offset)
