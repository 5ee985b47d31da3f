"""A control plane stopped and started again on the same data dir keeps its models, devices and rollouts, and a
rebuilt rollout keeps following device reports. A job left running by a killed process is marked failed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from control_plane.adapters.db.engine import make_engine
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.domain.training import TrainingJob, TrainingJobSpec, TrainingStatus
from edge_agent.protocol import MessageKind
from tests.integration.control_plane.conftest import DeviceClient, server_settings, start_server
from tests.integration.control_plane.helpers import deployable, reported, wait_build
from tests.support import Mosquitto, enroll_device, wait_for
from tests.unit.control_plane.onnx_models import linear_model, linear_samples

pytestmark = pytest.mark.integration


def test_state_survives_a_restart(
    mosquitto: Mosquitto, tmp_path: Path, device_factory: Callable[[str], DeviceClient]
) -> None:
    settings = server_settings(mosquitto, tmp_path / "data")
    first = start_server(settings)
    try:
        build = deployable(first.http, "restart-model")
        enroll_device(first.http, "dev-8", labels={"site": "restart"})
        dev = device_factory("dev-8")
        rollout = first.http.post(
            "/v1/rollouts", json={"model": "restart-model", "version": 1, "selector": {"labels": {"site": "restart"}}}
        ).json()
        key = first.http.get("/v1/keys/signing").json()
    finally:
        first.stop()

    orphan = TrainingJob(
        id="orphan", spec=TrainingJobSpec(name="o", model_name="o", entrypoint="/x.py"), status=TrainingStatus.RUNNING,
        created_at=datetime.now(UTC), started_at=datetime.now(UTC), finished_at=None, error=None,
        log_path=str(tmp_path / "none.log"), model=None, version=None,
    )  # fmt: skip
    engine = make_engine(settings.resolved_database_url)
    RegistryRepository(engine).save_job(orphan)
    engine.dispose()

    second = start_server(settings.model_copy(update={"port": settings.port}))
    try:
        api = second.http
        assert api.get("/v1/keys/signing").json() == key
        assert api.get("/v1/models/restart-model").json()["latest_version"] == 1
        assert api.get(f"/v1/builds/{build['id']}").json()["status"] == "succeeded"
        assert api.get("/v1/devices/dev-8").json()["desired_generation"] == 1
        again = api.get(f"/v1/rollouts/{rollout['id']}").json()
        assert (again["phase"], again["devices"][0]["status"]) == ("in_progress", "in_progress")
        job = api.get("/v1/training/jobs/orphan").json()
        assert (job["status"], job["error"]) == ("failed", "control plane restarted during the job")

        dev.send(
            MessageKind.REPORTED,
            reported("dev-8", applied=1, labels={"site": "restart"}, models=(("restart-model", 1, build["id"]),)),
        )
        wait_for(
            lambda: api.get(f"/v1/rollouts/{rollout['id']}").json()["phase"] == "succeeded",
            what="the rollout rebuilt after restart to follow the report",
        )
    finally:
        second.stop()


def test_queued_builds_resume_after_a_restart(mosquitto: Mosquitto, tmp_path: Path, database_url: str) -> None:
    settings = server_settings(mosquitto, tmp_path / "data", database_url).model_copy(update={"build_workers": 0})
    first = start_server(settings)
    try:
        upload = first.http.post(
            "/v1/models/resume/versions",
            files={"model": ("m.onnx", linear_model()), "samples": ("s.npz", linear_samples())},
        )
        assert upload.status_code == 201, upload.text
        answer = first.http.post(
            "/v1/models/resume/versions/1/builds", json={"targets": ["cpu-x86_64"], "kinds": ["onnx", "onnx-int8-qdq"]}
        )
        assert answer.status_code == 202, answer.text
        queued = answer.json()["builds"]
        assert [b["status"] for b in queued] == ["waiting_for_builder", "waiting_for_builder"]
        other = first.http.post("/v1/models/resume/versions/1/builds", json={"targets": ["dgpu-ampere"]})
        (dropped,) = other.json()["builds"]
        assert first.http.post(f"/v1/builds/{dropped['id']}/cancel").json()["status"] == "cancelled"
    finally:
        first.stop()

    second = start_server(settings.model_copy(update={"build_workers": 1}))
    try:
        finals = [wait_build(second.http, b["id"]) for b in queued]
        assert [(b["kind"], b["status"]) for b in finals] == [("onnx", "succeeded"), ("onnx-int8-qdq", "succeeded")]
        assert second.http.get(f"/v1/builds/{dropped['id']}").json()["status"] == "cancelled"  # never came back
    finally:
        second.stop()


def test_a_staged_rollout_continues_after_a_restart_mid_rollout(
    mosquitto: Mosquitto, tmp_path: Path, device_factory: Callable[[str], DeviceClient], database_url: str
) -> None:
    """Stopped after the canary was published, started again: the canary's report moves the rollout to its wave,
    which the new control plane publishes and follows to the end. (Devices sort by id: dev-10 is the canary.)"""
    settings = server_settings(mosquitto, tmp_path / "data", database_url)
    devices = {name: device_factory(name) for name in ("dev-9", "dev-10")}
    first = start_server(settings)
    try:
        build = deployable(first.http, "staged-model")
        for name in devices:
            enroll_device(first.http, name, labels={"site": "staged"})
        body = {
            "model": "staged-model",
            "version": 1,
            "selector": {"labels": {"site": "staged"}},
            "strategy": {"type": "canary", "canary": {"count": 1}},
        }
        rollout = first.http.post("/v1/rollouts", json=body).json()
        assert [d["status"] for d in rollout["devices"]] == ["in_progress", "waiting"]
    finally:
        first.stop()

    second = start_server(settings.model_copy(update={"port": settings.port}))
    try:
        api = second.http
        devices["dev-10"].send(
            MessageKind.REPORTED,
            reported("dev-10", applied=1, labels={"site": "staged"}, models=(("staged-model", 1, build["id"]),)),
        )
        wait_for(
            lambda: api.get(f"/v1/rollouts/{rollout['id']}").json()["devices"][1]["status"] == "in_progress",
            what="the wave published by the restarted control plane",
        )
        devices["dev-9"].send(
            MessageKind.REPORTED,
            reported("dev-9", applied=1, labels={"site": "staged"}, models=(("staged-model", 1, build["id"]),)),
        )
        done = wait_for(
            lambda: (r := api.get(f"/v1/rollouts/{rollout['id']}").json())["phase"] == "succeeded" and r,
            what="the rollout completed after the restart",
        )
        assert [s["verdict"] for s in done["steps"]] == ["passed", "passed"]
    finally:
        second.stop()
