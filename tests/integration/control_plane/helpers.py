"""Builders of wire messages and of a deployable version, shared by the integration tests."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from edge_agent.protocol import (
    ApplyOutcome,
    ApplyPhase,
    EventStep,
    HardwareFacts,
    ModelHealth,
    ModelStatus,
    ReportedState,
)
from tests.support import wait_for
from tests.unit.control_plane.onnx_models import linear_model, linear_samples


def reported(
    device_id: str,
    applied: int = 0,
    labels: dict[str, str] | None = None,
    gpu_class: str = "cpu-x86_64",
    models: tuple[tuple[str, int] | tuple[str, int, str], ...] = (),
    failed: tuple[int, str] | None = None,
) -> ReportedState:
    now = datetime.now(UTC)
    return ReportedState(
        device_id=device_id,
        agent_version="0.1.0",
        applied_generation=applied,
        last_apply=None
        if failed is None
        else ApplyOutcome(
            generation=failed[0], phase=ApplyPhase.FAILED, step=EventStep.SELF_TEST_FAILED, reason=failed[1], at=now
        ),
        models=[
            ModelStatus(
                name=m[0],
                version=m[1],
                build_id=m[2] if len(m) > 2 else "b",  # the build sent; a report naming another is refused
                active_slot="a",
                provider="CPUExecutionProvider",
                health=ModelHealth.SERVING,
            )
            for m in models
        ],
        hardware=HardwareFacts(gpu_class=gpu_class, arch="x86_64", cpu_count=2, memory_mb=2048),
        labels=labels or {},
    )


FINISHED = ("succeeded", "rejected", "failed")


def wait_build(api: httpx.Client, build_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll a build until it has finished (the in-process worker builds it); its final BuildOut."""
    final: dict[str, Any] = wait_for(
        lambda: (b := api.get(f"/v1/builds/{build_id}").json())["status"] in FINISHED and b,
        timeout=timeout,
        what=f"build {build_id} to finish",
    )
    return final


def deployable(api: httpx.Client, name: str, targets: tuple[str, ...] = ("cpu-x86_64",)) -> dict[str, Any]:
    """Upload a version and build it (waiting for the build); the build of the first target."""
    answer = api.post(
        f"/v1/models/{name}/versions",
        files={"model": ("m.onnx", linear_model()), "samples": ("s.npz", linear_samples())},
    )
    assert answer.status_code == 201, answer.text
    version = answer.json()["version"]
    builds = api.post(f"/v1/models/{name}/versions/{version}/builds", json={"targets": list(targets)})
    assert builds.status_code == 202, builds.text
    finals = [wait_build(api, b["id"]) for b in builds.json()["builds"]]
    assert all(b["status"] == "succeeded" for b in finals), finals
    return finals[0]
