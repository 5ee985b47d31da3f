"""onnxruntime behind the core's ModelRunner port; the only module of the agent that imports onnxruntime.

Providers are chosen from the detected hardware (not from what onnxruntime lists), and the provider actually in
use is reported. Every onnxruntime exception becomes RunnerError or InferenceInputError.

A `tensorrt-plan` artifact is an ONNX model with one EPContext node (`embed_mode=1`: the serialised engine is in
its `ep_cache_context` attribute). It is loaded with the TensorRT EP alone and graph optimisations off (ORT's own
advice for EPContext models), and refused if onnxruntime would run it on anything else. Provider options have
`{data_dir}` and the hardware placeholders filled in (core.providers) and their cache directories created here.
Must never decide whether a plan fits this hardware: core.artifacts does, before a plan gets this far.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_agent.core.errors import InferenceInputError, RunnerError
from edge_agent.core.providers import cache_dirs, providers_for
from edge_agent.core.tensors import TensorSpec
from edge_agent.protocol import HardwareFacts, RuntimeOptions
from edge_agent.protocol.provider_options import on_device as resolve_provider_options
from edge_agent.protocol.vocabulary import ArtifactKind, ExecutionProvider

log = logging.getLogger(__name__)

_ORT_TYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int16)": "INT16",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def runtime_version() -> str:
    return str(ort.__version__)


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(dim if isinstance(dim, int) and dim > 0 else -1 for dim in (arg.shape or []))
    return TensorSpec(name=arg.name, datatype=_ORT_TYPES.get(arg.type, "BYTES"), shape=shape)


class OnnxRunner:
    def __init__(self, session: Any) -> None:
        self._session = session
        self._inputs = [_spec(arg) for arg in session.get_inputs()]
        self._outputs = [_spec(arg) for arg in session.get_outputs()]
        self._provider = str(session.get_providers()[0])

    @property
    def provider(self) -> str:
        return self._provider

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [spec.name for spec in self._outputs]
        try:
            results = self._session.run(names, dict(feeds))
        except (ort.capi.onnxruntime_pybind11_state.InvalidArgument, ValueError, TypeError) as exc:
            raise InferenceInputError(str(exc).splitlines()[0][:500]) from exc
        except Exception as exc:
            raise RunnerError(f"{type(exc).__name__}: {str(exc)[:500]}") from exc
        return {name: np.asarray(value) for name, value in zip(names, results, strict=True)}


class OnnxRunnerFactory:
    """Loads model files into onnxruntime sessions for this device.

    `data_dir` and `facts` fill the provider-option templates (engine cache paths); without them (benchmarks,
    tools) an option that names `{data_dir}` is refused rather than written relative to the working directory.
    """

    def __init__(self, gpu_present: bool, data_dir: Path | None = None, facts: HardwareFacts | None = None) -> None:
        self._gpu_present = gpu_present
        self._available = available_providers()
        self._data_dir = data_dir
        self._facts = facts

    def load(self, path: Path, runtime: RuntimeOptions, kind: ArtifactKind = ArtifactKind.ONNX) -> OnnxRunner:
        providers = providers_for(kind, self._gpu_present, self._available, runtime.providers)
        if kind == ArtifactKind.TENSORRT_PLAN and ExecutionProvider.TENSORRT not in self._available:
            raise RunnerError(
                f"{path.name} is a TensorRT plan; it runs only on {ExecutionProvider.TENSORRT}, which this onnxruntime "
                f"({runtime_version()}) does not offer (it has {', '.join(self._available)})"
            )
        wanted: dict[str, Mapping[str, str]] = {p: runtime.provider_options.get(p, {}) for p in providers}
        resolved = self._provider_options(wanted)
        options = [resolved[p] for p in providers]
        session = self._session(path, kind, providers, options)
        runner = OnnxRunner(session)
        if kind == ArtifactKind.TENSORRT_PLAN and runner.provider != ExecutionProvider.TENSORRT:
            raise RunnerError(
                f"onnxruntime put the TensorRT plan {path.name} on {runner.provider}, not {ExecutionProvider.TENSORRT}"
            )
        log.info("loaded %s (%s) with providers %s; in use: %s", path, kind, providers, runner.provider)
        return runner

    def _provider_options(self, options: Mapping[str, Mapping[str, str]]) -> dict[str, dict[str, str]]:
        """Options of the providers in use, resolved; their cache directories exist afterwards."""
        if self._data_dir is None or self._facts is None:
            if any("{data_dir}" in v for values in options.values() for v in values.values()):
                raise RunnerError("provider options name {data_dir}, and this runner has no data directory")
            return {p: dict(values) for p, values in options.items()}
        resolved = resolve_provider_options(options, self._data_dir, self._facts)
        for directory in cache_dirs(resolved):
            try:
                directory.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise RunnerError(f"cannot create the engine cache directory {directory}: {exc}") from exc
        return resolved

    @staticmethod
    def _session(path: Path, kind: ArtifactKind, providers: Sequence[str], options: list[dict[str, str]]) -> Any:
        session_options = ort.SessionOptions()
        if kind == ArtifactKind.TENSORRT_PLAN:
            # An EPContext model has nothing to optimise; ORT advises level 0 so loading does no graph work.
            session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        try:
            return ort.InferenceSession(
                str(path), sess_options=session_options, providers=providers, provider_options=options
            )
        except Exception as exc:
            raise RunnerError(f"onnxruntime cannot load {path.name}: {str(exc).splitlines()[0][:500]}") from exc
