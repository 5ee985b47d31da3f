"""onnxruntime behind the core's ModelRunner port; the only module of the agent that imports onnxruntime.

Providers are chosen from the detected hardware (not from what onnxruntime lists), and the provider actually in
use is reported. Every onnxruntime exception becomes RunnerError or InferenceInputError.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from edge_agent.core.errors import InferenceInputError, RunnerError
from edge_agent.core.providers import choose_providers
from edge_agent.core.tensors import TensorSpec
from edge_agent.protocol import RuntimeOptions

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
    def __init__(self, gpu_present: bool) -> None:
        self._gpu_present = gpu_present
        self._available = available_providers()

    def load(self, path: Path, runtime: RuntimeOptions) -> OnnxRunner:
        providers = choose_providers(self._gpu_present, self._available, runtime.providers)
        options = [dict(runtime.provider_options.get(p, {})) for p in providers]
        try:
            session = ort.InferenceSession(str(path), providers=providers, provider_options=options)
        except Exception as exc:
            raise RunnerError(f"onnxruntime cannot load {path.name}: {str(exc).splitlines()[0][:500]}") from exc
        runner = OnnxRunner(session)
        log.info("loaded %s with providers %s; in use: %s", path, providers, runner.provider)
        return runner
