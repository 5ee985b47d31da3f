"""Re-proving a delivered artifact: the control plane runs it on its own onnxruntime (in the bounded sandbox) on
the version's sample inputs and measures parity against the version's reference outputs with the model's
tolerances. That measurement, not the builder's, is what a build's status and its signed manifest carry.

What it proves: the artifact agrees with the reference on the version's samples. What it cannot prove: how the
artifact behaves on inputs that are not among the samples (a model trojaned to answer differently on a trigger
input passes; docs/builds.md says so). It must never run an artifact outside `run` (the sandbox: killable, time-
and memory-bounded), and never let a builder's figures into its verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from control_plane.domain.errors import NotFound
from control_plane.domain.registry import ModelVersion, TensorInfo
from control_plane.services.ports import Artifacts
from model_builds.onnx_model import InvalidModel, ModelSignature, TensorSpec, load_npz, split_samples
from model_builds.ort_sandbox import SandboxError
from model_builds.protocol import ParityReport, Tolerances
from model_builds.reports import parity

# `model_builds.ort_sandbox.run_bounded` with the control plane's limits bound (settings: sandbox time and memory).
RunModel = Callable[[Path, Mapping[str, np.ndarray]], dict[str, np.ndarray]]


class ReProver:
    def __init__(self, artifacts: Artifacts, run: RunModel) -> None:
        self._artifacts = artifacts
        self._run = run

    def prove(self, version: ModelVersion, artifact: Path, tolerances: Tolerances) -> ParityReport:
        """The control plane's own parity report for `artifact`: a failed report (with the reason) when it does not
        run or its outputs do not match the reference on the samples."""
        inputs, reference = self._samples(version)
        if not reference:
            return _refused(tolerances, "the version's samples hold no reference outputs to prove the artifact against")
        try:
            outputs = self._run(artifact, inputs)
        except SandboxError as exc:
            return _refused(tolerances, f"the artifact did not run on the control plane: {exc.reason}")
        return parity(outputs, reference, tolerances)

    def _samples(self, version: ModelVersion) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        path = self._artifacts.path_for(version.samples_sha256)
        if path is None:
            raise NotFound(f"{version.model} v{version.version}: samples {version.samples_sha256} are missing")
        signature = ModelSignature(_specs(version.inputs), _specs(version.outputs), opset=0)
        try:
            return split_samples(load_npz(path), signature)
        except InvalidModel as exc:  # the registry wrote them; unreadable now means the store is damaged
            raise NotFound(f"{version.model} v{version.version}: samples unusable: {exc}") from exc


def _specs(tensors: tuple[TensorInfo, ...]) -> tuple[TensorSpec, ...]:
    return tuple(TensorSpec(t.name, t.shape, t.dtype) for t in tensors)


def _refused(tolerances: Tolerances, reason: str) -> ParityReport:
    return ParityReport((), tolerances, False, (reason,))
