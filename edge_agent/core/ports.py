"""The ports the core is written against: fetching artifacts, loading model runners, emitting events.

Adapters implement these (httpx, onnxruntime, paho); tests and the fleet simulator pass fakes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_agent.core.tensors import TensorSpec
from edge_agent.protocol import ArtifactRef, DeviceEvent, RuntimeOptions

Clock = Callable[[], datetime]
EventSink = Callable[[DeviceEvent], None]


class ArtifactFetcher(Protocol):
    def fetch(self, artifact: ArtifactRef, dest: Path) -> None:
        """Leave the artifact's bytes at `dest`, resuming from `dest` + `.part` if it exists.

        Does not verify the digest (the core does); raises FetchError.
        """


class ModelRunner(Protocol):
    @property
    def provider(self) -> str: ...

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name; InferenceInputError for inputs the model cannot take, RunnerError otherwise."""


class RunnerFactory(Protocol):
    def load(self, path: Path, runtime: RuntimeOptions, kind: str = "onnx") -> ModelRunner:
        """A ready runner for the model file at `path` of artifact `kind`; RunnerError if it cannot be loaded."""
