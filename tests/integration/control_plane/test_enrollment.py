"""Devices join the fleet with an enrollment token and a key of their own, over real HTTP, with real `edge-agent`
processes and the real broker (docs/security.md, "A device, or someone holding an enrollment token").

What an attacker does NOT get is asserted beside what a device does get: no identity from an expired, used-up or
revoked token, no fleet place while pending or denied, nothing from the credentials a re-enrollment replaced.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from edge_agent.protocol import HardwareFacts, Signer
from edge_agent.protocol.enrollment import ENROLL_PATH, signed_request
from tests.integration.agent.harness import AgentProcess
from tests.integration.control_plane.conftest import RunningServer
from tests.integration.control_plane.helpers import deployable
from tests.support import (
    EDGE_AGENT,
    Mosquitto,
    enroll_agent,
    enrollment_token,
    free_port,
    python_env,
    run_enroll,
    wait_for,
)
from tests.unit.agent.builders import write_config

pytestmark = pytest.mark.integration
HARDWARE = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64", cpu_count=2, memory_mb=2048)


def ask(url: str, token: str, key: Signer, device_id: str | None = None) -> httpx.Response:
    """One enrollment request signed by `key`, as any HTTP client could send it."""
    request = signed_request(key, HARDWARE, datetime.now(UTC), device_id)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return httpx.post(url + ENROLL_PATH, content=request.model_dump_json(), headers=headers, timeout=30)


def enrollments(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {e["device_id"]: e for e in api.get("/v1/enrollments").json()}


def device_ids(api: httpx.Client) -> set[str]:
    return {d["id"] for d in api.get("/v1/devices").json()}


def base_config(home: Path, public_key: str) -> Path:
    """What provisioning puts on a device before it enrolls: where its data lives and where it serves."""
    home.mkdir(parents=True, exist_ok=True)
    config = write_config(
        home / "agent.yaml", home / "data", public_key, serving={"host": "127.0.0.1", "port": free_port()}
    )
    # The agent's own labels are only a claim; a freshly provisioned device has none.
    written = yaml.safe_load(config.read_text())
    written.pop("labels")
    config.write_text(yaml.safe_dump(written))
    return config


def start_enroll(url: str, token: str, config: Path, device_id: str) -> subprocess.Popen[str]:
    argv = [EDGE_AGENT, "enroll", "--url", url, "--config", str(config), "--device-id", device_id]
    argv += ["--poll-initial-s", "0.2", "--poll-max-s", "1"]
    env = python_env() | {"EDGE_AGENT_ENROLL_TOKEN": token}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str]:
    _, err = process.communicate(timeout=timeout)
    return process.returncode, err


def test_tokens_that_are_used_up_or_revoked_enroll_nobody(control_plane: RunningServer) -> None:
    api, url = control_plane.http, control_plane.url
    once = enrollment_token(api, "once", max_uses=1)
    assert ask(url, once, Signer.generate(), "enr-once-1").status_code == 200
    second = ask(url, once, Signer.generate(), "enr-once-2")
    assert second.status_code == 401 and "used up" in second.json()["detail"]

    revoked = enrollment_token(api, "revoked")
    token_id = next(t["id"] for t in api.get("/v1/enrollment-tokens").json() if t["name"] == "revoked")
    assert api.post(f"/v1/enrollment-tokens/{token_id}/revoke").status_code == 200
    refused = ask(url, revoked, Signer.generate(), "enr-revoked")
    assert refused.status_code == 401 and "revoked" in refused.json()["detail"]

    forged = ask(url, "enroll_" + "x" * 43, Signer.generate(), "enr-forged")
    assert forged.status_code == 401
    viewer_token = api.post("/v1/tokens", json={"name": "v", "role": "viewer"}).json()["token"]
    assert ask(url, viewer_token, Signer.generate(), "enr-viewer").status_code == 403
    # None of them got a place in the fleet or a request on record; the secret is in no listing.
    assert {"enr-once-2", "enr-revoked", "enr-forged", "enr-viewer"}.isdisjoint(device_ids(api) | set(enrollments(api)))
    assert "enr-once-1" in device_ids(api)
    assert all("token" not in t for t in api.get("/v1/enrollment-tokens").json())


def test_a_request_not_signed_by_its_key_or_too_large_is_refused_before_anything_is_stored(
    control_plane: RunningServer,
) -> None:
    api, url = control_plane.http, control_plane.url
    token = enrollment_token(api, "unsigned")
    request = signed_request(Signer.generate(), HARDWARE, datetime.now(UTC), "enr-unsigned")
    stolen_key = request.model_copy(update={"public_key": Signer.generate().public_key_b64})
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    answer = httpx.post(url + ENROLL_PATH, content=stolen_key.model_dump_json(), headers=headers)
    assert answer.status_code == 401 and "not signed by the key" in answer.json()["detail"]
    huge = httpx.post(url + ENROLL_PATH, content=b"{" + b" " * 100_000 + b"}", headers=headers)
    assert huge.status_code == 413
    assert httpx.post(url + ENROLL_PATH, content=b"{not json").status_code == 401  # no token: never parsed
    assert "enr-unsigned" not in set(enrollments(api)) | device_ids(api)


def test_a_pending_agent_waits_then_is_approved_serves_a_rollout_and_keeps_its_history_when_it_enrolls_again(
    control_plane: RunningServer, mosquitto: Mosquitto, tmp_path: Path
) -> None:
    api, url = control_plane.http, control_plane.url
    public_key = api.get("/v1/keys/signing").json()["public_key"]
    token = enrollment_token(api, "site-enr", labels={"site": "enr"}, auto_approve=False)
    config = base_config(tmp_path / "dev", public_key)

    # Pending: the agent keeps asking; the device has no place in the fleet, so no rollout can select it.
    waiting = start_enroll(url, token, config, "enr-dev")
    pending = wait_for(lambda: enrollments(api).get("enr-dev"), what="a pending enrollment")
    assert pending["status"] == "pending" and pending["requested_with"] == "site-enr"
    assert "enr-dev" not in device_ids(api) and waiting.poll() is None
    assert api.post("/v1/devices/enr-dev/approve").status_code == 200
    code, err = finished(waiting)
    assert code == 0, err
    written = yaml.safe_load(config.read_text())
    assert (written["device_id"], written["mqtt"]["username"]) == ("enr-dev", "enr-dev")
    assert written["control_plane_public_key"] == public_key
    for secret_file in (config, Path(written["device_key_file"])):
        assert secret_file.stat().st_mode & 0o777 == 0o600
    assert "PRIVATE KEY" not in str(api.get("/v1/enrollments").json())
    mosquitto.add_user(written["mqtt"]["username"], written["mqtt"]["password"])
    device = api.get("/v1/devices/enr-dev").json()
    assert device["labels"] == {"site": "enr"} and device["gpu_class"]

    # It serves what a rollout sends it, downloading with the artifact credential it received.
    agent = AgentProcess(config, tmp_path / "agent.log").start()
    try:
        wait_for(lambda: api.get("/v1/devices/enr-dev").json()["presence"] == "online", timeout=60, what="online")
        deployable(api, "enr-model", (device["gpu_class"],))
        body = {"model": "enr-model", "version": 1, "selector": {"labels": {"site": "enr"}}, "strategy": "all-at-once"}
        rollout = api.post("/v1/rollouts", json=body).json()
        wait_for(
            lambda: api.get(f"/v1/rollouts/{rollout['id']}").json()["phase"] == "succeeded",
            timeout=90,
            what=f"rollout succeeded\n{agent.output()[-2000:]}",
        )
    finally:
        agent.terminate()
    old_token = written["control_plane_token"]
    artifact = api.get("/v1/devices/enr-dev").json()["reported"]["models"][0]["build_id"]
    sha = api.get(f"/v1/builds/{artifact}").json()["artifact_sha256"]
    assert httpx.get(f"{url}/v1/artifacts/{sha}", headers={"Authorization": f"Bearer {old_token}"}).status_code == 200
    history = [e["step"] for e in api.get("/v1/devices/enr-dev/events", params={"limit": 1000}).json()]
    assert "activated" in history and "enrolled" in history

    # Someone with a fresh auto-approving token cannot take the id over: it waits for an operator.
    thief = enrollment_token(api, "thief", auto_approve=True)
    taken = ask(url, thief, Signer.generate(), "enr-dev")
    assert taken.status_code == 202 and "already enrolled" in taken.json()["message"]
    assert api.post("/v1/devices/enr-dev/deny", json={"reason": "not ours"}).status_code == 200

    # The device itself rotates its key, signed by its current one: at once, with its history.
    rotated = run_enroll(url, None, config, "--rotate")
    assert rotated.returncode == 0, rotated.stderr
    again = yaml.safe_load(config.read_text())
    assert again["control_plane_token"] != old_token and again["mqtt"]["password"] != written["mqtt"]["password"]
    refused = httpx.get(f"{url}/v1/artifacts/{sha}", headers={"Authorization": f"Bearer {old_token}"})
    assert refused.status_code == 401  # the replaced credential gets nothing
    events = [e["step"] for e in api.get("/v1/devices/enr-dev/events", params={"limit": 1000}).json()]
    assert {"activated", "enrolled", "key_rotated", "enrollment_denied"} <= set(events)
    assert [d["device_id"] for d in api.get(f"/v1/rollouts/{rollout['id']}").json()["devices"]] == ["enr-dev"]
    assert api.get("/v1/devices/enr-dev").json()["labels"] == {"site": "enr"}

    # With its new identity it comes back and still serves what it served.
    mosquitto.add_user(again["mqtt"]["username"], again["mqtt"]["password"])
    seen = api.get("/v1/devices/enr-dev").json()["last_seen"]
    agent = AgentProcess(config, tmp_path / "agent-rotated.log").start()
    try:
        wait_for(
            lambda: (d := api.get("/v1/devices/enr-dev").json())["presence"] == "online" and d["last_seen"] > seen,
            timeout=60,
            what="the rotated agent online",
        )
        served = api.get("/v1/devices/enr-dev").json()["reported"]["models"]
        assert [(m["name"], m["version"]) for m in served] == [("enr-model", 1)]
    finally:
        agent.terminate()


def test_a_denied_agent_is_told_and_stops_asking(control_plane: RunningServer, tmp_path: Path) -> None:
    api, url = control_plane.http, control_plane.url
    token = enrollment_token(api, "deny-me", auto_approve=False)
    config = base_config(tmp_path / "dev", api.get("/v1/keys/signing").json()["public_key"])
    waiting = start_enroll(url, token, config, "enr-denied")
    wait_for(lambda: enrollments(api).get("enr-denied"), what="a pending enrollment")
    assert api.post("/v1/devices/enr-denied/deny", json={"reason": "unknown serial"}).status_code == 200
    code, err = finished(waiting)
    assert code == 3 and "denied" in err and "unknown serial" in err and "not asking again" in err
    # Asking again with the same key gets the same answer at once; the device never joined the fleet.
    again = run_enroll(url, token, config, "--device-id", "enr-denied")
    assert again.returncode == 3
    assert "enr-denied" not in device_ids(api)
    assert "mqtt" not in yaml.safe_load(config.read_text())


def test_an_auto_approving_token_presets_labels_channel_and_gpu_class(
    control_plane: RunningServer, tmp_path: Path
) -> None:
    api, url = control_plane.http, control_plane.url
    token = enrollment_token(api, "presets", labels={"site": "preset", "line": "3"}, gpu_class="dgpu-ampere")
    config = base_config(tmp_path / "dev", api.get("/v1/keys/signing").json()["public_key"])
    enroll_agent(None, url, token, config, "enr-preset")
    device = api.get("/v1/devices/enr-preset").json()
    assert (device["labels"], device["gpu_class"], device["channel"]) == (
        {"site": "preset", "line": "3"},
        "dgpu-ampere",
        "mqtt",
    )
    assert api.get("/v1/devices", params={"selector": "site=preset,gpu_class=dgpu-ampere"}).json()[0]["id"] == (
        "enr-preset"
    )
