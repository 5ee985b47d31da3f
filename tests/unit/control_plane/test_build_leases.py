"""The builder protocol's steps as data (control_plane/domain/build_leases.py): who may take a build, the task
it gets, and what each step writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from control_plane.domain import build_leases
from control_plane.domain.build_trust import MeasuredBy
from control_plane.domain.builds import version_tolerances
from control_plane.domain.registry import Build, BuildStatus, ModelVersion
from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.protocol import (
    BuilderInfo,
    BuildOptions,
    BuildReport,
    OutputParity,
    ParityReport,
    RemoteFile,
    default_tolerances,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
FILE = RemoteFile("http://cp/v1/artifacts/" + "a" * 64, "a" * 64, 10)
ONNX_HOST = BuilderInfo("b1", "h", (ArtifactKind.ONNX,))
ORIN_HOST = BuilderInfo(
    "orin-1", "orin", (ArtifactKind.ONNX, ArtifactKind.TENSORRT_PLAN), "jetson-orin", "8.7", "10.3.0"
)
NO_CLASS_GPU = BuilderInfo("gpu-1", "g", (ArtifactKind.TENSORRT_PLAN,), None, "8.7", "10.3.0")


def build(kind: ArtifactKind = ArtifactKind.ONNX, target: str = "jetson-orin", **changes: object) -> Build:
    plan = kind is ArtifactKind.TENSORRT_PLAN
    fields: dict[str, object] = {
        "id": "b", "model": "m", "version": 1, "target": target, "precision": Precision.FP16, "artifact_kind": kind,
        "status": BuildStatus.QUEUED, "artifact_sha256": None, "artifact_size": None, "error": None, "created_at": NOW,
        "manifest": {}, "manifest_signature": None, "key": "k", "compute_capability": "8.7" if plan else None,
        "tensorrt_version": "10.3.0" if plan else None,
    }  # fmt: skip
    return Build(**(fields | changes))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("info", "candidate", "able"),
    [
        pytest.param(ONNX_HOST, build(), True, id="onnx-anywhere"),
        pytest.param(ONNX_HOST, build(ArtifactKind.TENSORRT_PLAN), False, id="no-plan-without-tensorrt"),
        pytest.param(ORIN_HOST, build(ArtifactKind.TENSORRT_PLAN), True, id="plan-of-its-own-class"),
        pytest.param(ORIN_HOST, build(ArtifactKind.TENSORRT_PLAN, "dgpu-ampere"), False, id="plan-of-another-class"),
        pytest.param(NO_CLASS_GPU, build(ArtifactKind.TENSORRT_PLAN, "dgpu-ampere"), True, id="classless-gpu-host"),
        pytest.param(
            ORIN_HOST, build(ArtifactKind.TENSORRT_PLAN, tensorrt_version="8.6.2"), False, id="other-tensorrt"
        ),
    ],
)
def test_who_may_take_a_build(info: BuilderInfo, candidate: Build, able: bool) -> None:
    assert build_leases.can_build(info, candidate) is able


def test_the_task_names_the_build_and_never_the_calibration_option() -> None:
    stored = build(options={"workspace_mb": 512, "calibration_sha256": "c" * 64, "profiles": None})
    task = build_leases.task_of(stored, FILE, FILE, None, default_tolerances(Precision.FP16), 30)
    assert (task.build_id, task.kind, task.precision, task.lease_s) == ("b", ArtifactKind.ONNX, Precision.FP16, 30)
    assert task.options == BuildOptions(workspace_mb=512)


@pytest.mark.parametrize(
    ("message", "progress", "expected"),
    [
        pytest.param(None, None, {}, id="lease-only"),
        pytest.param("m" * 3000, 1.7, {"message": "m" * 2000, "progress": 1.0}, id="bounded"),
        pytest.param("", -1.0, {"progress": 0.0}, id="empty-message-kept-out"),
    ],
)
def test_a_heartbeat_renews_the_lease(message: str | None, progress: float | None, expected: dict[str, object]) -> None:
    changes = build_leases.renewed(NOW, 60, message, progress)
    assert changes == {"lease_expires_at": NOW + timedelta(seconds=60), **expected}


@pytest.mark.parametrize(
    ("passed", "status", "error"),
    [
        pytest.param(True, BuildStatus.SUCCEEDED, None, id="within-tolerance"),
        pytest.param(False, BuildStatus.REJECTED, "parity: too far", id="outside-tolerance"),
    ],
)
def test_a_delivery_is_judged_and_never_signed_here(passed: bool, status: BuildStatus, error: str | None) -> None:
    output = OutputParity("y", 0.0, 0.0, 1.0, 1.0)
    parity = ParityReport((output,), default_tolerances(Precision.FP16), passed, () if passed else ("too far",))
    figures = build_leases.figures_of(parity, MeasuredBy.CONTROL_PLANE)
    report = BuildReport(parity={"outputs": []}, latency={"provider": "CPU"})
    changes = build_leases.delivered("s" * 64, 5, parity, figures, report, {"gpu_class": "c"}, NOW)
    assert (changes["status"], changes["error"], changes["manifest_signature"]) == (status, error, None)
    assert changes["parity"]["measured_by"] == "control-plane" and changes["reported_parity"] == {"outputs": []}
    assert changes["latency"] == {"provider": "CPU"} and changes["lease_expires_at"] is None


def test_requeued_forgets_the_holder_and_failed_bounds_the_error() -> None:
    assert (
        build_leases.requeued()["builder_subject"] is None and build_leases.requeued()["status"] is BuildStatus.QUEUED
    )
    assert len(build_leases.failed("e" * 10_000, NOW)["error"]) == build_leases.MAX_LOG_LINE * 4


@pytest.mark.parametrize(
    ("overrides", "atol", "refusal"),
    [
        pytest.param({}, 1e-2, None, id="defaults"),
        pytest.param({"fp16": {"atol": 0.5}}, 0.5, None, id="override"),
        pytest.param({"fp16": {"atoll": 0.5}}, None, "m v3: tolerances: unknown tolerance", id="typo-named"),
    ],
)
def test_one_reading_of_a_versions_tolerances(
    overrides: dict[str, object], atol: float | None, refusal: str | None
) -> None:
    version = ModelVersion(
        model="m", created_at=NOW, source_sha256="a" * 64, source_size=1, inputs=(), outputs=(),
        samples_sha256="b" * 64, sample_count=1, samples_synthesised=False, reference_outputs_computed=False,
        tolerances=overrides, version=3,  # type: ignore[arg-type]
    )  # fmt: skip
    if refusal is not None:
        with pytest.raises(ValueError, match=refusal):
            version_tolerances(version, build())
        return
    assert version_tolerances(version, build()).atol == atol
