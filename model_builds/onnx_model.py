"""Inspect an uploaded ONNX file and check sample arrays against its signature.

Everything here works on untrusted input: any defect becomes an `InvalidModel` whose text says what is wrong,
never another exception. It must never write files (callers decide where things live).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnx

from model_builds.npz import NpzError, NpzLimits, read_npz

Dim = int | str
Arrays = dict[str, npt.NDArray[np.generic]]


class InvalidModel(ValueError):
    """An upload that is not a usable ONNX model or whose samples do not fit it."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[Dim, ...]
    dtype: str  # numpy dtype name, e.g. "float32"


@dataclass(frozen=True)
class ModelSignature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    opset: int


def _tensor_spec(value: onnx.ValueInfoProto) -> TensorSpec:
    ttype = value.type.tensor_type
    if not value.type.HasField("tensor_type"):
        raise InvalidModel(f"graph value {value.name!r} is not a tensor; only tensor inputs/outputs are supported")
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(ttype.elem_type)).name
    except (KeyError, TypeError) as exc:
        raise InvalidModel(f"tensor {value.name!r} has an unsupported element type {ttype.elem_type}") from exc
    dims: list[Dim] = []
    for i, dim in enumerate(ttype.shape.dim):
        if dim.HasField("dim_value"):
            dims.append(int(dim.dim_value))
        else:
            dims.append(dim.dim_param or f"d{i}")
    return TensorSpec(name=value.name, shape=tuple(dims), dtype=dtype)


def inspect_model(path: Path) -> ModelSignature:
    """Parse and check the model at `path`; its signature, or InvalidModel with the reason.

    About twice the file's size in memory at the peak (the file's bytes and their parse; the checker parses the
    file again only once those are gone): run it through `ort_sandbox.inspect_bounded` for a file from outside."""
    if path.stat().st_size == 0:
        raise InvalidModel("the model file is empty")
    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises DecodeError (and others) on arbitrary bytes
        raise InvalidModel(f"not an ONNX model (protobuf parse failed: {_first_line(exc)})") from exc
    signature = _signature(model)
    del model  # nothing else may hold a part of it (a loop variable would keep the whole parse alive)
    try:
        # By path: the checker parses the file itself rather than a re-serialised copy of the model.
        onnx.checker.check_model(str(path))
    except (onnx.checker.ValidationError, ValueError, RuntimeError) as exc:
        raise InvalidModel(f"not a valid ONNX model: {_first_line(exc)}") from exc
    if not signature.inputs or not signature.outputs:
        raise InvalidModel("the model must have at least one input and one output")
    return signature


def _signature(model: onnx.ModelProto) -> ModelSignature:
    for init in model.graph.initializer:
        if init.data_location == onnx.TensorProto.EXTERNAL:
            location = next((e.value for e in init.external_data if e.key == "location"), "?")
            raise InvalidModel(
                f"initializer {init.name!r} keeps its data in the external file {location!r}, which was not "
                "uploaded; send it with the model (`edgectl models push` does when it lies next to the model)"
            )
    initializers = {i.name for i in model.graph.initializer}
    inputs = tuple(_tensor_spec(v) for v in model.graph.input if v.name not in initializers)
    outputs = tuple(_tensor_spec(v) for v in model.graph.output)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return ModelSignature(inputs=inputs, outputs=outputs, opset=opset)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def split_samples(arrays: Arrays, signature: ModelSignature) -> tuple[Arrays, Arrays]:
    """(inputs, outputs) from an .npz's arrays named `input:NAME`/`output:NAME` (plain input names allowed)."""
    inputs: Arrays = {}
    outputs: Arrays = {}
    input_names = {t.name for t in signature.inputs}
    for key, value in arrays.items():
        if key.startswith("input:"):
            inputs[key.removeprefix("input:")] = value
        elif key.startswith("output:"):
            outputs[key.removeprefix("output:")] = value
        elif key in input_names:
            inputs[key] = value
        else:
            raise InvalidModel(
                f"samples array {key!r} is neither 'input:NAME' nor 'output:NAME' nor a model input "
                f"(model inputs: {sorted(input_names)})"
            )
    _check_against(inputs, signature.inputs, "input", require_all=True)
    if outputs:
        _check_against(outputs, signature.outputs, "output", require_all=True)
    return inputs, outputs


def _check_against(arrays: Arrays, specs: tuple[TensorSpec, ...], role: str, require_all: bool) -> None:
    by_name = {t.name: t for t in specs}
    unknown = sorted(set(arrays) - set(by_name))
    if unknown:
        raise InvalidModel(f"samples name {role}(s) {unknown} that the model does not have (it has {sorted(by_name)})")
    missing = sorted(set(by_name) - set(arrays))
    if require_all and missing:
        raise InvalidModel(f"samples lack {role}(s) {missing}")
    for name, array in arrays.items():
        spec = by_name[name]
        if array.dtype.name != spec.dtype:
            raise InvalidModel(f"samples {role} {name!r} has dtype {array.dtype.name}, the model wants {spec.dtype}")
        if array.ndim != len(spec.shape):
            raise InvalidModel(
                f"samples {role} {name!r} has shape {list(array.shape)}, the model wants rank {len(spec.shape)} "
                f"{list(spec.shape)}"
            )
        for got, want in zip(array.shape, spec.shape, strict=True):
            if isinstance(want, int) and got != want:
                raise InvalidModel(
                    f"samples {role} {name!r} has shape {list(array.shape)}, the model wants {list(spec.shape)}"
                )


def synthesise_inputs(signature: ModelSignature, seed_text: str) -> Arrays:
    """Deterministic random inputs: the first dynamic dim is 2 (two samples), other dynamic dims 1."""
    seed = int.from_bytes(hashlib.sha256(seed_text.encode()).digest()[:8], "big")
    rng = np.random.default_rng(seed)
    feeds: Arrays = {}
    for spec in signature.inputs:
        shape: list[int] = []
        first_dynamic = True
        for dim in spec.shape:
            if isinstance(dim, int):
                shape.append(dim)
            else:
                shape.append(2 if first_dynamic else 1)
                first_dynamic = False
        feeds[spec.name] = _random(rng, spec, tuple(shape))
    return feeds


def _random(rng: np.random.Generator, spec: TensorSpec, shape: tuple[int, ...]) -> npt.NDArray[np.generic]:
    dtype = np.dtype(spec.dtype)
    if dtype.kind == "f":
        return rng.standard_normal(shape).astype(dtype)
    if dtype.kind in "iu":
        return rng.integers(0, 10, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    raise InvalidModel(f"cannot synthesise samples for input {spec.name!r} of dtype {spec.dtype}; upload samples")


def sample_count(inputs: Arrays) -> int:
    """How many samples the feeds hold: the leading dimension of the first input (1 for scalars)."""
    first = next(iter(inputs.values()))
    return int(first.shape[0]) if first.ndim >= 1 else 1


def load_npz(path: Path, limits: NpzLimits = NpzLimits()) -> Arrays:
    """The arrays of an .npz file within `limits` (sizes checked before inflating), refusing pickled objects and
    anything that is not an .npz. The text of the InvalidModel names no path: callers prefix the upload's field."""
    try:
        return read_npz(path, limits)
    except NpzError as exc:
        raise InvalidModel(str(exc)) from exc


def save_npz(path: Path, inputs: Arrays, outputs: Arrays) -> None:
    arrays = {f"input:{k}": v for k, v in inputs.items()} | {f"output:{k}": v for k, v in outputs.items()}
    with path.open("wb") as fh:
        np.savez(fh, **arrays)  # type: ignore[arg-type]
