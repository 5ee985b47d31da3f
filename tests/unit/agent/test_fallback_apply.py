"""The apply path with a TensorRT plan and its ONNX fallback: what this device installs, serves, says and reports.

The CPU device here refuses any plan, so the fallback paths run for real (real onnxruntime, file:// artifacts).
The one test where the plan fits uses a fake GPU runner factory, named as such: no GPU and no TensorRT here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from edge_agent.core.tensors import TensorSpec
from edge_agent.protocol import (
    ApplyPhase,
    ArtifactRef,
    DeviceEvent,
    EventStep,
    HardwareFacts,
    ModelAssignment,
    RuntimeOptions,
    Signer,
)
from tests.unit.agent.builders import SAMPLE, build_version, expected_output, signed, weights, with_plan
from tests.unit.agent.conftest import CoreFactory

PLAN_SHA = "ab" * 32


def steps(events: list[DeviceEvent], generation: int | None = None) -> list[EventStep]:
    return [e.step for e in events if generation is None or e.generation == generation]


def files_under(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_a_refused_plan_falls_back_says_why_and_reports_the_build_in_use(
    tmp_path: Path, make_core: CoreFactory, signer: Signer, events: list[DeviceEvent]
):
    core = make_core()
    core.recover()

    result = core.handle(signed(signer, 1, [with_plan(build_version(tmp_path / "art", 1))]))

    assert result.ok, result.reason
    assert steps(events)[:3] == [EventStep.RECEIVED, EventStep.ARTIFACT_FALLBACK, EventStep.DOWNLOADING]
    fallback_event = events[1]
    assert fallback_event.reason is not None
    assert fallback_event.reason.startswith("using onnx build b1: tensorrt-plan b1-plan built for dgpu-ampere")
    assert "this device is cpu-x86_64" in fallback_event.reason
    served = core.table.current().models["lin"].active
    np.testing.assert_allclose(served.runner.run({"X": SAMPLE})["Y"], expected_output(1), rtol=1e-5)
    [status] = core.reported().models
    assert (status.build_id, status.provider, status.health.value) == ("b1", "CPUExecutionProvider", "serving")
    record = core.state.active["lin"]
    assert (record.build_id, record.artifact_kind) == ("b1", "onnx")
    assert record.fallback_reason is not None and "dgpu-ampere" in record.fallback_reason
    assert PLAN_SHA not in " ".join(files_under(tmp_path / "data"))  # the plan was never downloaded


def test_without_a_fallback_the_apply_fails_with_the_reason_and_the_old_model_serves(
    tmp_path: Path, make_core: CoreFactory, signer: Signer, events: list[DeviceEvent]
):
    core = make_core()
    core.recover()
    assert core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)])).ok

    result = core.handle(signed(signer, 2, [with_plan(build_version(tmp_path / "art", 2), fallback=False)]))

    assert not result.ok
    assert result.reason.endswith("and no fallback was sent")
    assert core.reported().last_apply.phase is ApplyPhase.FAILED  # type: ignore[union-attr]
    assert steps(events, 2) == [EventStep.RECEIVED, EventStep.ERROR]
    assert core.table.current().models["lin"].active.version == 1
    assert core.reported().models[0].build_id == "b1"


def test_the_self_test_uses_the_fallback_artifacts_tolerances(
    tmp_path: Path, make_core: CoreFactory, signer: Signer, events: list[DeviceEvent]
):
    # A lower-precision fallback: within 0.1 of the reference, far outside the plan's 1e-4.
    loose = with_plan(build_version(tmp_path / "art", 1, shift=0.01), atol=0.1, rtol=0.0)
    tight = with_plan(build_version(tmp_path / "art", 2, shift=0.01), atol=1e-4, rtol=0.0)
    core = make_core()
    core.recover()

    assert core.handle(signed(signer, 1, [loose])).ok
    failed = core.handle(signed(signer, 2, [tight]))

    assert not failed.ok and "atol=0.0001" in failed.reason
    assert steps(events, 2)[-1] is EventStep.SELF_TEST_FAILED
    assert core.table.current().models["lin"].active.version == 1


def test_an_applied_fallback_is_kept_by_the_next_generation_not_reinstalled(
    tmp_path: Path, make_core: CoreFactory, signer: Signer, events: list[DeviceEvent]
):
    assignment = with_plan(build_version(tmp_path / "art", 1))
    core = make_core()
    core.recover()
    assert core.handle(signed(signer, 1, [assignment])).ok

    assert core.handle(signed(signer, 2, [assignment])).ok

    assert EventStep.DOWNLOADING not in steps(events, 2)
    assert core.state.applied_generation == 2 and core.reported().models[0].build_id == "b1"


class FakeGpuRunners:
    """FAKE (no GPU or TensorRT here): records what it was asked to load and computes the linear model in numpy."""

    def __init__(self) -> None:
        self.loads: list[tuple[str, str, RuntimeOptions]] = []

    def load(self, path: Path, runtime: RuntimeOptions, kind: str = "onnx") -> FakeGpuRunner:
        self.loads.append((path.name, kind, runtime))
        return FakeGpuRunner()


class FakeGpuRunner:
    provider = "TensorrtExecutionProvider"
    inputs: Sequence[TensorSpec] = (TensorSpec("X", "FP32", (-1, 4)),)
    outputs: Sequence[TensorSpec] = (TensorSpec("Y", "FP32", (-1, 2)),)

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        w, b = weights(1)
        return {"Y": feeds["X"] @ w + b}


def real_plan_file(root: Path, assignment: ModelAssignment) -> ModelAssignment:
    """Give the assignment's plan real bytes (any bytes: the fake runner never parses them)."""
    path = root / "lin-plan.onnx"
    path.write_bytes(b"serialized engine stand-in")
    ref = ArtifactRef(url=path.as_uri(), sha256=hashlib.sha256(path.read_bytes()).hexdigest(), size=path.stat().st_size)
    return assignment.model_copy(update={"artifact": ref})


def test_a_device_whose_hardware_fits_runs_the_plan_itself(
    tmp_path: Path, make_core: CoreFactory, signer: Signer, events: list[DeviceEvent]
):
    ampere = HardwareFacts(
        gpu_class="dgpu-ampere",
        arch="x86_64",
        compute_capability="8.6",
        tensorrt_version="10.3.0",
        available_providers=["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
    )
    runners = FakeGpuRunners()
    core = make_core(runners=runners, hardware=ampere)
    core.recover()

    assert core.handle(signed(signer, 1, [real_plan_file(tmp_path, with_plan(build_version(tmp_path, 1)))])).ok

    assert EventStep.ARTIFACT_FALLBACK not in steps(events)
    assert [(kind) for _, kind, _ in runners.loads] == ["tensorrt-plan"]
    [status] = core.reported().models
    assert (status.build_id, status.provider) == ("b1-plan", "TensorrtExecutionProvider")
    assert core.state.active["lin"].artifact_kind == "tensorrt-plan"

    # After a restart the journal reloads the plan as a plan, not as plain ONNX.
    fresh = make_core(runners=runners, hardware=ampere)
    fresh.recover()
    assert runners.loads[-1][1] == "tensorrt-plan" and fresh.table.current().ready


def test_an_installed_plan_is_not_reloaded_on_hardware_it_no_longer_fits(
    tmp_path: Path, make_core: CoreFactory, signer: Signer, events: list[DeviceEvent]
):
    ampere = HardwareFacts(
        gpu_class="dgpu-ampere",
        arch="x86_64",
        compute_capability="8.6",
        tensorrt_version="10.3.0",
        available_providers=["TensorrtExecutionProvider", "CPUExecutionProvider"],
    )
    upgraded = ampere.model_copy(update={"tensorrt_version": "10.8.0"})
    runners = FakeGpuRunners()
    core = make_core(runners=runners, hardware=ampere)
    core.recover()
    assert core.handle(signed(signer, 1, [real_plan_file(tmp_path, with_plan(build_version(tmp_path, 1)))])).ok

    after_upgrade = make_core(runners=runners, hardware=upgraded)
    after_upgrade.recover()

    assert len(runners.loads) == 1  # the stale plan was never handed to the runtime
    assert not after_upgrade.table.current().ready
    assert "built with TensorRT 10.3.0, this device has 10.8.0" in (events[-1].reason or "")
    assert after_upgrade.reported().models[0].health.value == "failed"
