"""Fleet and rollouts end to end over the real broker: devices report, a rollout publishes signed desired
states, reports move each device to activated or failed, and bad payloads never stop the server."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from edge_agent.protocol import (
    DesiredState,
    DeviceEvent,
    EventStep,
    HardwareFacts,
    MessageKind,
    Presence,
    PresenceStatus,
    SignedDesiredState,
    Verifier,
    open_envelope,
)
from tests.integration.control_plane.conftest import Deployment, DeviceClient, devices_on
from tests.integration.control_plane.helpers import deployable, reported, wait_build
from tests.support import enroll_device, wait_for

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)

Factory = Callable[[str], DeviceClient]


@pytest.fixture
def api(deployment: Deployment) -> httpx.Client:
    """Every test here runs on SQLite and on PostgreSQL (`deployment`), with the broker of that control plane."""
    return deployment.server.http


@pytest.fixture
def device_factory(deployment: Deployment) -> Iterator[Factory]:
    yield from devices_on(deployment.broker)


def device_json(api: httpx.Client, device_id: str) -> dict[str, Any] | None:
    answer = api.get(f"/v1/devices/{device_id}")
    return dict(answer.json()) if answer.status_code == 200 else None


def desired_docs(api: httpx.Client, device: DeviceClient, skip: int = 0) -> list[DesiredState]:
    """The desired states the device received (after the first `skip`, e.g. retained ones of earlier tests)."""
    verifier = Verifier(api.get("/v1/keys/signing").json()["public_key"])
    docs = []
    for payload in device.received[skip:]:
        _, signed = open_envelope(payload, MessageKind.DESIRED, SignedDesiredState)
        docs.append(verifier.verify_desired(signed))
    return docs


def rollout_status(api: httpx.Client, rollout_id: str, phase: str) -> dict[str, Any] | None:
    body = api.get(f"/v1/rollouts/{rollout_id}").json()
    return dict(body) if body["phase"] == phase else None


def test_reported_device_is_listed_with_labels_class_and_presence(api: httpx.Client, device_factory: Factory) -> None:
    enroll_device(api, "dev-1", labels={"site": "factory-a", "line": "2"})
    dev = device_factory("dev-1")
    dev.send(MessageKind.REPORTED, reported("dev-1", labels={"site": "factory-a", "line": "2"}))
    dev.send(MessageKind.STATUS, Presence(state=PresenceStatus.ONLINE))
    shown = wait_for(lambda: (d := device_json(api, "dev-1")) and d["presence"] == "online" and d, what="dev-1 online")
    assert shown["labels"] == {"site": "factory-a", "line": "2"}
    assert (shown["gpu_class"], shown["channel"], shown["hardware"]["cpu_count"]) == ("cpu-x86_64", "mqtt", 2)
    assert shown["reported"]["agent_version"] == "0.1.0"
    selected = api.get("/v1/devices", params={"selector": "site=factory-a,gpu_class=cpu-x86_64"}).json()
    assert "dev-1" in [d["id"] for d in selected]
    assert api.get("/v1/devices", params={"selector": "site=elsewhere"}).json() == []
    assert api.get("/v1/devices", params={"selector": "no-equals"}).status_code == 422

    dev.send(MessageKind.STATUS, Presence(state=PresenceStatus.OFFLINE))
    wait_for(lambda: device_json(api, "dev-1")["presence"] == "offline", what="dev-1 offline")  # type: ignore[index]


def test_rollout_publishes_signed_desired_state_and_follows_activation(
    api: httpx.Client, device_factory: Factory
) -> None:
    build = deployable(api, "fleet-ok")
    enroll_device(api, "dev-2", labels={"site": "rollout-ok"})
    dev = device_factory("dev-2")

    answer = api.post(
        "/v1/rollouts",
        json={
            "model": "fleet-ok",
            "version": 1,
            "selector": {"labels": {"site": "rollout-ok"}},
            "strategy": "all-at-once",
        },
    )
    assert answer.status_code == 201, answer.text
    rollout = answer.json()
    assert rollout["phase"] == "in_progress" and rollout["counts"]["in_progress"] == 1
    assert rollout["devices"][0]["build_id"] == build["id"]

    (doc,) = wait_for(lambda: desired_docs(api, dev), what="desired state delivered to dev-2")
    assert (doc.device_id, doc.generation, doc.rollout_id) == ("dev-2", 1, rollout["id"])
    (model,) = doc.models
    assert (model.name, model.version, model.build_id, model.target) == ("fleet-ok", 1, build["id"], "cpu-x86_64")
    assert model.artifact.sha256 == build["artifact_sha256"] and model.artifact.size == build["artifact_size"]
    assert model.artifact.url.endswith(f"/v1/artifacts/{build['artifact_sha256']}")
    assert len(api.get(model.artifact.url).content) == build["artifact_size"]
    samples_sha = api.get("/v1/models/fleet-ok/versions/1").json()["samples_sha256"]
    assert model.selftest.artifact.sha256 == samples_sha
    assert model.selftest.artifact.url.endswith(f"/v1/artifacts/{samples_sha}")
    assert (model.selftest.atol, model.selftest.rtol) == (1e-4, 1e-3)
    assert device_json(api, "dev-2")["desired_generation"] == 1  # type: ignore[index]

    sent = ("fleet-ok", 1, build["id"])
    dev.send(MessageKind.REPORTED, reported("dev-2", applied=1, labels={"site": "rollout-ok"}, models=(sent,)))
    done = wait_for(lambda: rollout_status(api, rollout["id"], "succeeded"), what="rollout succeeded")
    assert done["devices"][0]["status"] == "activated" and done["counts"]["activated"] == 1


def test_failed_apply_aborts_and_restores_the_rollout(api: httpx.Client, device_factory: Factory) -> None:
    deployable(api, "fleet-fail")
    enroll_device(api, "dev-3", labels={"site": "rollout-fail"})
    dev = device_factory("dev-3")
    rollout = api.post(
        "/v1/rollouts", json={"model": "fleet-fail", "version": 1, "selector": {"labels": {"site": "rollout-fail"}}}
    ).json()
    (doc,) = wait_for(lambda: desired_docs(api, dev), what="desired state delivered to dev-3")
    dev.send(
        MessageKind.REPORTED,
        reported("dev-3", labels={"site": "rollout-fail"}, failed=(doc.generation, "self-test: Y differs by 2.5")),
    )
    rolling = wait_for(lambda: rollout_status(api, rollout["id"], "rolling_back"), what="rollout rolling back")
    assert rolling["devices"][0]["status"] == "restoring"
    assert "self-test: Y differs by 2.5" in rolling["reason"]
    assert rolling["steps"][0]["verdict"] == "failed"
    # dev-3 had no model before: the restore's desired state removes it, and the device says it did.
    restore = wait_for(lambda: desired_docs(api, dev)[1:], what="restore delivered to dev-3")[0]
    assert restore.models == [] and restore.generation > doc.generation
    dev.send(MessageKind.REPORTED, reported("dev-3", applied=restore.generation, labels={"site": "rollout-fail"}))
    done = wait_for(lambda: rollout_status(api, rollout["id"], "rolled_back"), what="rollout rolled back")
    assert done["devices"][0]["status"] == "restored" and "1 device(s) restored" in done["reason"]


def test_overlap_is_refused_and_operator_commands(api: httpx.Client, device_factory: Factory) -> None:
    deployable(api, "fleet-ops")
    enroll_device(api, "dev-12", labels={"site": "ops"})
    dev = device_factory("dev-12")
    body = {"model": "fleet-ops", "version": 1, "selector": {"labels": {"site": "ops"}}}
    seen = len(dev.received)
    first = api.post("/v1/rollouts", json=body).json()
    again = api.post("/v1/rollouts", json=body)
    assert again.status_code == 409 and first["id"] in again.json()["detail"] and "dev-12" in again.json()["detail"]
    assert api.post(f"/v1/rollouts/{first['id']}/resume").status_code == 409
    paused = api.post(f"/v1/rollouts/{first['id']}/pause").json()
    assert paused["phase"] == "paused" and "resume" in paused["allowed_commands"]
    aborted = api.post(f"/v1/rollouts/{first['id']}/abort").json()
    assert aborted["phase"] == "rolling_back" and aborted["devices"][0]["status"] == "restoring"
    refused = api.post(f"/v1/rollouts/{first['id']}/abort")
    assert refused.status_code == 409 and "rolling_back" in refused.json()["detail"]
    restore = wait_for(lambda: desired_docs(api, dev, seen)[1:], what="restore delivered to dev-12")[0]
    dev.send(MessageKind.REPORTED, reported("dev-12", applied=restore.generation, labels={"site": "ops"}))
    wait_for(lambda: rollout_status(api, first["id"], "rolled_back"), what="the aborted rollout rolled back")
    bad = api.post("/v1/rollouts", json=body | {"strategy": {"type": "canary", "canary": {"percent": 150}}})
    assert bad.status_code == 422 and "percent" in str(bad.json()["detail"])


def test_rollout_refusals(api: httpx.Client, device_factory: Factory) -> None:
    deployable(api, "fleet-refuse")
    enroll_device(api, "dev-4", labels={"site": "refuse"}, gpu_class="jetson-orin")
    dev = device_factory("dev-4")
    body = {"model": "fleet-refuse", "version": 1, "selector": {"labels": {"site": "refuse"}}}
    missing = api.post("/v1/rollouts", json=body)
    assert missing.status_code == 409 and "jetson-orin" in missing.json()["detail"]
    nobody = api.post("/v1/rollouts", json=body | {"selector": {"labels": {"site": "nowhere"}}})
    assert nobody.status_code == 422 and "matched no devices" in nobody.json()["detail"]
    unknown = api.post("/v1/rollouts", json=body | {"version": 9})
    assert unknown.status_code == 404
    assert api.post("/v1/rollouts", json=body | {"strategy": "yolo"}).status_code == 422
    assert dev.received == []


@pytest.mark.parametrize(
    ("leaf", "payload"),
    [
        pytest.param("reported", b"\xff\xfe not json", id="reported-garbage"),
        pytest.param("reported", b'{"protocol_version": 1}', id="reported-incomplete-envelope"),
        pytest.param("events", b"[]", id="events-not-an-object"),
        pytest.param("status", b"{}", id="status-empty-object"),
        pytest.param("telemetry", b"null", id="telemetry-null"),
    ],
)
def test_malformed_payloads_do_not_stop_the_server(
    api: httpx.Client, device_factory: Factory, leaf: str, payload: bytes
) -> None:
    enroll_device(api, "dev-5")
    dev = device_factory("dev-5")
    dev.publish(leaf, payload, retain=False)
    dev.send(
        MessageKind.EVENT, DeviceEvent(generation=1, step=EventStep.ERROR, reason=f"after {leaf}", at=NOW), retain=False
    )
    wait_for(
        lambda: any(e["reason"] == f"after {leaf}" for e in api.get("/v1/devices/dev-5/events").json()),
        what="the valid event after a malformed one",
    )
    assert api.get("/healthz").json()["mqtt_connected"] is True


def test_messages_naming_another_device_are_dropped(api: httpx.Client, device_factory: Factory) -> None:
    enroll_device(api, "dev-6", labels={"who": "me"})
    dev = device_factory("dev-6")
    dev.send(MessageKind.REPORTED, reported("dev-6", labels={"who": "me"}))
    wait_for(lambda: device_json(api, "dev-6")["reported"], what="dev-6 reported")  # type: ignore[index]
    dev.send(MessageKind.REPORTED, reported("dev-7", labels={"who": "impostor"}))  # on dev-6's topic
    dev.send(
        MessageKind.EVENT, DeviceEvent(generation=0, step=EventStep.RECEIVED, reason="marker", at=NOW), retain=False
    )
    wait_for(lambda: api.get("/v1/devices/dev-6/events").json(), what="marker event")
    assert device_json(api, "dev-6")["labels"] == {"who": "me"}  # type: ignore[index]
    assert device_json(api, "dev-7") is None


def _plan_from_a_stand_in_gpu_builder(api: httpx.Client, model: str) -> dict[str, Any]:
    """A TensorRT plan for jetson-orin sm8.7/TensorRT 10.3.0, built by a stand-in builder (registered by the admin for
    that hardware: the control plane cannot re-prove a plan) over the real REST protocol (no GPU here: the 'plan'
    bytes are a stand-in, which is all the rollout logic looks at)."""
    answer = api.post(
        f"/v1/models/{model}/versions/1/builds",
        json={"targets": ["jetson-orin"], "kinds": ["onnx", "tensorrt-plan"]},
    )
    assert answer.status_code == 202, answer.text
    registration = {"name": f"orin-stand-in-{model}", "compute_capability": "8.7", "tensorrt": "10.3.0"}
    registered = api.post("/v1/builders", json=registration)
    assert registered.status_code == 201, registered.text
    builder = {"Authorization": f"Bearer {registered.json()['token']}"}
    info = {"builder_id": "orin-stand-in", "hostname": "orin", "kinds": ["tensorrt-plan"], "gpu_class": "jetson-orin",
            "compute_capability": "8.7", "tensorrt_version": "10.3.0"}  # fmt: skip
    task = api.post("/v1/builders/claim", json=info, headers=builder)
    assert task.status_code == 200, task.text
    output = {"name": "Y", "max_abs": 0.0, "max_rel": 0.0, "reference_scale": 1.0, "cosine": 1.0}
    report = {"parity": {"outputs": [output]}, "latency": {}, "toolchain": {"tensorrt": "10.3.0"},
              "hardware": {"compute_capability": "8.7", "tensorrt_version": "10.3.0"}, "build_options": {}}  # fmt: skip
    done = api.post(
        f"/v1/builds/{task.json()['build_id']}/complete",
        data={"builder_id": "orin-stand-in", "report": json.dumps(report)},
        files={"artifact": ("plan.onnx", b"stand-in plan bytes")},
        headers=builder,
    )
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    for b in answer.json()["builds"]:
        if b["kind"] == "onnx":
            wait_build(api, b["id"])
    return dict(done.json())


def test_a_matching_plan_goes_out_with_the_onnx_fallback(api: httpx.Client, device_factory: Factory) -> None:
    deployable(api, "fleet-plan")
    plan = _plan_from_a_stand_in_gpu_builder(api, "fleet-plan")
    body = {"model": "fleet-plan", "version": 1, "selector": {"labels": {"site": "plan"}}}

    def enroll(tensorrt: str) -> None:
        """The operator (or facts.yml) records the device's hardware: a report never changes it."""
        orin = {"arch": "aarch64", "compute_capability": "8.7", "tensorrt_version": tensorrt}
        enroll_device(api, "dev-11", labels={"site": "plan"}, gpu_class="jetson-orin", hardware=orin)

    enroll("10.3.0")
    dev = device_factory("dev-11")
    first = api.post("/v1/rollouts", json=body)
    assert first.status_code == 201
    (doc,) = wait_for(lambda: desired_docs(api, dev), what="desired state for dev-11")
    (model,) = doc.models
    assert (model.build_id, model.artifact_kind) == (plan["id"], "tensorrt-plan")
    assert model.hardware_key is not None and model.hardware_key.tensorrt_version == "10.3.0"
    assert model.fallback is not None and model.fallback.artifact_kind == "onnx"
    cache = model.runtime.provider_options["TensorrtExecutionProvider"]["trt_engine_cache_path"]
    assert cache.startswith("{data_dir}") and "jetson-orin" in cache and "8.7" in cache and "10.3.0" in cache

    # The device activates it, then its TensorRT changes: no plan was built for it, the portable ONNX goes out
    # (a second rollout to the same device is refused while the first is open).
    state = reported("dev-11", applied=doc.generation, gpu_class="jetson-orin", models=(("fleet-plan", 1, plan["id"]),))
    orin = HardwareFacts(gpu_class="jetson-orin", arch="aarch64", compute_capability="8.7", tensorrt_version="10.3.0")
    dev.send(MessageKind.REPORTED, state.model_copy(update={"labels": {"site": "plan"}, "hardware": orin}))
    wait_for(lambda: rollout_status(api, first.json()["id"], "succeeded"), what="first rollout succeeded")
    enroll("8.6.2")
    wished = api.post("/v1/rollouts", json=body | {"kind": "tensorrt-plan"})
    assert wished.status_code == 409 and "TensorRT 8.6.2" in wished.json()["detail"]
    assert api.post("/v1/rollouts", json=body).status_code == 201
    newest = wait_for(lambda: (docs := desired_docs(api, dev)) and len(docs) == 2 and docs[-1], what="2nd state")
    (portable,) = newest.models
    assert (portable.artifact_kind, portable.fallback, portable.hardware_key) == ("onnx", None, None)


def test_the_rollout_list_pages_newest_first_with_a_link_to_the_next_page(
    api: httpx.Client, device_factory: Factory
) -> None:
    deployable(api, "fleet-pages")
    made = []
    for n in range(3):
        enroll_device(api, f"dev-page-{n}", labels={"site": f"pages-{n}"})
        body = {"model": "fleet-pages", "version": 1, "selector": {"labels": {"site": f"pages-{n}"}}}
        created = api.post("/v1/rollouts", json=body)
        assert created.status_code == 201, created.text
        made.append(created.json()["id"])

    first = api.get("/v1/rollouts", params={"limit": 2})
    assert [r["id"] for r in first.json()] == [made[2], made[1]]  # newest first: this test's are the newest
    assert all(r["devices"] == [] for r in first.json())  # a list never carries the devices, only their counts
    following = first.links["next"]["url"]
    second = api.get(following)
    assert second.json()[0]["id"] == made[0]
    assert api.get("/v1/rollouts", params={"cursor": "not-one-of-ours"}).status_code == 422
