"""The build queue's pure decisions: claim order, lease expiry, builder presence, and what a build waits for."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from control_plane.domain.builds import claim_choice, lease_lapsed, needs, recent_builders, view
from control_plane.domain.registry import Build, BuilderRecord, BuildStatus
from edge_agent.protocol.vocabulary import ArtifactKind, Precision

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def build(build_id: str, status: BuildStatus = BuildStatus.QUEUED, kind: str = "onnx", age_s: int = 0) -> Build:
    return Build(
        id=build_id, model="m", version=1, target="jetson-orin", precision=Precision.FP32,
        artifact_kind=ArtifactKind(kind), status=status,
        artifact_sha256=None, artifact_size=None, error=None, created_at=NOW - timedelta(seconds=age_s), manifest={},
        manifest_signature=None, compute_capability="8.7" if kind == "tensorrt-plan" else None,
        tensorrt_version="10.3.0" if kind == "tensorrt-plan" else None,
    )  # fmt: skip


def test_claims_go_oldest_first_and_only_to_what_the_builder_can_build() -> None:
    builds = [
        build("new", age_s=1),
        build("old", age_s=9),
        build("plan", kind="tensorrt-plan", age_s=20),
        build("busy", BuildStatus.RUNNING, age_s=30),
    ]
    onnx_only = claim_choice(builds, lambda b: b.artifact_kind == "onnx")
    assert [b.id for b in onnx_only] == ["old", "new"]
    assert [b.id for b in claim_choice(builds, lambda b: True)] == ["plan", "old", "new"]
    assert claim_choice(builds, lambda b: False) == []


@pytest.mark.parametrize(
    ("status", "expires_in_s", "lapsed"),
    [
        pytest.param(BuildStatus.RUNNING, 5, False, id="renewed"),
        pytest.param(BuildStatus.RUNNING, 0, True, id="expires-now"),
        pytest.param(BuildStatus.RUNNING, -1, True, id="expired"),
        pytest.param(BuildStatus.QUEUED, -1, False, id="not-running"),
        pytest.param(BuildStatus.SUCCEEDED, -1, False, id="finished"),
    ],
)
def test_lease_lapse(status: BuildStatus, expires_in_s: int, lapsed: bool) -> None:
    held = replace(build("b", status), lease_expires_at=NOW + timedelta(seconds=expires_in_s))
    assert lease_lapsed(held, NOW) is lapsed


def test_a_running_build_without_a_lease_never_lapses() -> None:
    assert not lease_lapsed(build("b", BuildStatus.RUNNING), NOW)


def test_recent_builders_within_the_window_newest_first() -> None:
    records = [
        BuilderRecord("a", "h", {}, NOW - timedelta(seconds=10)),
        BuilderRecord("b", "h", {}, NOW - timedelta(seconds=1)),
        BuilderRecord("gone", "h", {}, NOW - timedelta(seconds=61)),
    ]
    assert [r.builder_id for r in recent_builders(records, NOW, timedelta(seconds=60))] == ["b", "a"]


@pytest.mark.parametrize(
    ("b", "able", "status", "waiting_for"),
    [
        pytest.param(build("q"), False, BuildStatus.WAITING_FOR_BUILDER, "a builder that builds onnx", id="nobody"),
        pytest.param(build("q"), True, BuildStatus.QUEUED, None, id="someone-can"),
        pytest.param(build("p", kind="tensorrt-plan"), False, BuildStatus.WAITING_FOR_BUILDER,
                     "a builder with TensorRT 10.3.0 on compute capability 8.7", id="plan"),
        pytest.param(build("r", BuildStatus.RUNNING), False, BuildStatus.RUNNING, None, id="running"),
        pytest.param(build("s", BuildStatus.SUCCEEDED), False, BuildStatus.SUCCEEDED, None, id="finished"),
    ],
)  # fmt: skip
def test_view_derives_waiting_for_builder(b: Build, able: bool, status: BuildStatus, waiting_for: str | None) -> None:
    builders = [BuilderRecord("x", "h", {}, NOW)] if able else []
    shown = view(b, builders)
    assert (shown.status, shown.waiting_for) == (status, waiting_for)
    assert needs(b).startswith("a builder")
