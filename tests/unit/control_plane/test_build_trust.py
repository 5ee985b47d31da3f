"""Whose word a build rests on: which kinds the control plane re-proves, which registrations cover a plan, when a
builder's report disagrees, which builds can be cancelled, and what a builder that lost a build is told."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from control_plane.domain.build_trust import (
    BuilderRegistration,
    cancel_refusal,
    disagreement,
    lost_reason,
    plan_refusal,
    reproved,
    tensorrt_matches,
)
from control_plane.domain.registry import Build, BuildStatus
from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.protocol import ParityReport, Tolerances

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ORIN = BuilderRegistration("token:orin", "orin-01", "8.7", "10.x", None, "token:admin", NOW)


def build(kind: str = "tensorrt-plan", status: BuildStatus = BuildStatus.RUNNING, trt: str = "10.3.0") -> Build:
    plan = kind == "tensorrt-plan"
    return Build(
        id="b", model="m", version=1, target="jetson-orin", precision=Precision.FP16,
        artifact_kind=ArtifactKind(kind), status=status,
        artifact_sha256=None, artifact_size=None, error=None, created_at=NOW, manifest={}, manifest_signature=None,
        compute_capability="8.7" if plan else None, tensorrt_version=trt if plan else None,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        pytest.param("onnx", True, id="onnx"),
        pytest.param("onnx-fp16", True, id="fp16"),
        pytest.param("onnx-int8-qdq", True, id="int8-qdq"),
        pytest.param("tensorrt-plan", False, id="plan"),
    ],
)
def test_the_control_plane_reproves_every_onnx_kind_and_no_plan(kind: str, expected: bool) -> None:
    assert reproved(ArtifactKind(kind)) is expected


@pytest.mark.parametrize(
    ("pattern", "version", "expected"),
    [
        pytest.param("10.3.0", "10.3.0", True, id="exact"),
        pytest.param("10.3.0", "10.3.1", False, id="exact-other-patch"),
        pytest.param("10.x", "10.3.0", True, id="major-wildcard"),
        pytest.param("10", "10.0.1", True, id="major-only"),
        pytest.param("10.3", "10.3.7", True, id="minor"),
        pytest.param("10.x", "8.6.2", False, id="other-major"),
        pytest.param("10.3.0.1", "10.3.0", False, id="pattern-longer-than-version"),
        pytest.param("x", "10.3.0", False, id="first-position-must-be-a-number"),
        pytest.param("10.*", "10.3.0", False, id="not-a-pattern"),
        pytest.param("10.x", None, False, id="no-version"),
    ],
)
def test_tensorrt_patterns(pattern: str, version: str | None, expected: bool) -> None:
    assert tensorrt_matches(pattern, version) is expected


@pytest.mark.parametrize(
    ("candidate", "registration", "refused_because"),
    [
        pytest.param(build(), ORIN, None, id="registered-for-it"),
        pytest.param(build(), None, "only a builder an administrator registered", id="unregistered"),
        pytest.param(build(), replace(ORIN, compute_capability="8.6"), "compute capability 8.6", id="other-gpu"),
        pytest.param(build(trt="8.6.2"), ORIN, "TensorRT 10.x", id="other-tensorrt"),
        pytest.param(build(), replace(ORIN, gpu_class="dgpu-ampere"), "GPU class dgpu-ampere", id="other-class"),
        pytest.param(build("onnx"), None, None, id="onnx-needs-no-registration"),
    ],
)
def test_only_a_registration_for_the_hardware_covers_a_plan(
    candidate: Build, registration: BuilderRegistration | None, refused_because: str | None
) -> None:
    refusal = plan_refusal(candidate, registration)
    if refused_because is None:
        assert refusal is None
    else:
        assert refusal is not None and refused_because in refusal


def report(passed: bool) -> ParityReport:
    return ParityReport((), Tolerances(1e-4, 1e-3, 0.99999, None), passed, () if passed else ("off",))


@pytest.mark.parametrize(
    ("measured", "reported", "says"),
    [
        pytest.param(True, True, None, id="agree-pass"),
        pytest.param(False, False, None, id="agree-fail"),
        pytest.param(
            False,
            True,
            "reported parity within tolerance; the control plane measured it outside",
            id="builder-claims-a-pass",
        ),
        pytest.param(True, False, "reported parity outside", id="builder-too-pessimistic"),
    ],
)
def test_a_disagreeing_report_is_named(measured: bool, reported: bool, says: str | None) -> None:
    found = disagreement(report(measured), report(reported))
    assert found == says if says is None else (found is not None and says in found)


@pytest.mark.parametrize(
    ("status", "cancellable"),
    [
        pytest.param(BuildStatus.QUEUED, True, id="queued"),
        pytest.param(BuildStatus.RUNNING, True, id="running"),
        pytest.param(BuildStatus.SUCCEEDED, False, id="succeeded"),
        pytest.param(BuildStatus.REJECTED, False, id="rejected"),
        pytest.param(BuildStatus.FAILED, False, id="failed"),
        pytest.param(BuildStatus.CANCELLED, False, id="cancelled"),
    ],
)
def test_only_unfinished_builds_can_be_cancelled(status: BuildStatus, cancellable: bool) -> None:
    refusal = cancel_refusal(build("onnx", status))
    assert (refusal is None) is cancellable
    if refusal is not None:
        assert status.value in refusal


def test_a_builder_that_lost_a_build_is_told_why_without_being_told_who_holds_it() -> None:
    assert "cancelled" in lost_reason(build(status=BuildStatus.CANCELLED))
    running = lost_reason(replace(build(), builder_id="orin-01", builder_subject="token:orin"))
    assert "does not hold" in running and "token:orin" not in running and "orin-01" not in running
