"""Planning a rollout: build choice per GPU class, generation bump, and the composed desired state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from control_plane.domain.fleet import Device
from control_plane.domain.registry import Build, BuildStatus
from control_plane.domain.rollouts import (
    PlanError,
    compose_desired,
    next_generation,
    plan_all_at_once,
    select_devices,
)
from control_plane.domain.selectors import Selector
from edge_agent.protocol import ArtifactRef, DesiredState, HardwareFacts, ModelAssignment, ReportedState, SelfTestSpec

NOW = datetime(2026, 1, 1, tzinfo=UTC)
SHA = "a" * 64


def device(device_id: str, gpu_class: str | None, labels: dict[str, str] | None = None, **kw: object) -> Device:
    return Device(id=device_id, created_at=NOW, gpu_class=gpu_class, labels=labels or {}, **kw)  # type: ignore[arg-type]


def build(target: str, status: BuildStatus = BuildStatus.SUCCEEDED) -> Build:
    return Build(
        id=f"b-{target}", model="m", version=2, target=target, precision="fp32", artifact_kind="onnx",
        status=status, artifact_sha256=SHA, artifact_size=10, error=None, created_at=NOW, manifest={},
        manifest_signature="sig",
    )  # fmt: skip


def assignment(name: str, version: int) -> ModelAssignment:
    ref = ArtifactRef(url=f"http://cp/v1/artifacts/{SHA}", sha256=SHA, size=10)
    return ModelAssignment(
        name=name, version=version, build_id="b", target="cpu-x86_64", artifact=ref, selftest=SelfTestSpec(artifact=ref)
    )


def reported(applied: int) -> ReportedState:
    return ReportedState(
        device_id="d", agent_version="x", applied_generation=applied, hardware=HardwareFacts(gpu_class="c", arch="x")
    )


@pytest.mark.parametrize(
    ("issued", "applied", "expected"),
    [
        pytest.param(0, None, 1, id="first"),
        pytest.param(3, 3, 4, id="in-sync"),
        pytest.param(3, 1, 4, id="device-behind"),
        pytest.param(0, 9, 10, id="database-reset-device-ahead"),
    ],
)
def test_next_generation_is_monotonic(issued: int, applied: int | None, expected: int) -> None:
    dev = device("d", "c", desired_generation=issued, reported=reported(applied) if applied is not None else None)
    assert next_generation(dev) == expected


def test_each_device_gets_the_build_of_its_class() -> None:
    devices = [device("a", "cpu-x86_64"), device("b", "jetson-orin")]
    plans = plan_all_at_once(devices, [build("cpu-x86_64"), build("jetson-orin")])
    assert [(p.device.id, p.build.target, p.generation) for p in plans] == [
        ("a", "cpu-x86_64", 1),
        ("b", "jetson-orin", 1),
    ]


def test_missing_builds_are_named() -> None:
    devices = [device("a", "cpu-x86_64"), device("b", "jetson-orin"), device("c", "dgpu-ada")]
    with pytest.raises(PlanError) as info:
        plan_all_at_once(devices, [build("cpu-x86_64"), build("jetson-orin", BuildStatus.REJECTED)])
    assert info.value.missing_targets == ("dgpu-ada", "jetson-orin")
    assert "dgpu-ada" in str(info.value)


def test_no_device_matched() -> None:
    with pytest.raises(PlanError, match="matched no devices"):
        plan_all_at_once([], [build("cpu-x86_64")])


def test_selection_by_labels_and_class() -> None:
    devices = [
        device("a", "cpu-x86_64", {"site": "f1"}),
        device("b", "cpu-x86_64", {"site": "f2"}),
        device("c", "jetson-orin", {"site": "f1"}),
    ]
    chosen = select_devices(devices, Selector(labels={"site": "f1"}, gpu_class="cpu-x86_64"))
    assert [d.id for d in chosen] == ["a"]


def test_compose_keeps_other_models_and_replaces_this_one() -> None:
    previous = DesiredState(
        device_id="d", generation=3, issued_at=NOW, models=[assignment("m", 1), assignment("other", 7)]
    )
    desired = compose_desired("d", previous, assignment("m", 2), 4, NOW, "r1")
    assert desired.generation == 4
    assert desired.rollout_id == "r1"
    assert [(m.name, m.version) for m in desired.models] == [("m", 2), ("other", 7)]


def test_compose_from_nothing() -> None:
    desired = compose_desired("d", None, assignment("m", 2), 1, NOW, "r1")
    assert [(m.name, m.version) for m in desired.models] == [("m", 2)]
