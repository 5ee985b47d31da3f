"""The Ansible channel end to end: devices enrolled over REST, playbook runs through the real ansible-runner and
ansible-playbook against `ansible_connection: local` hosts (and an ssh host nobody listens for), their results
landing in the fleet, the SSE event stream, cancel, rotation of run directories, restart recovery, migration 0004.

The playbooks are small doubles of the real ones (tests/integration/control_plane/playbooks/, named like them).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.cli.commands.rollout_watch import parse_sse
from control_plane.settings import AnsibleSettings
from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.integration.control_plane.helpers import reported
from tests.support import EDGECTL, ControlPlaneProcess, Mosquitto, free_port, python_env, wait_for

pytestmark = pytest.mark.integration

PLAYBOOKS = Path(__file__).parent / "playbooks"
REAL_PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"
KEEP_RUNS = 3


@pytest.fixture(scope="module")
def server(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = server_settings(mosquitto, tmp_path_factory.mktemp("cp-ansible"))
    settings = settings.model_copy(
        update={"ansible": AnsibleSettings(playbooks_dir=PLAYBOOKS, keep_runs=KEEP_RUNS, workers=2)}
    )
    running = start_server(settings)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(server: RunningServer) -> httpx.Client:
    return server.http


def enroll_local(api: httpx.Client, device_id: str, **labels: str) -> dict[str, Any]:
    body = {"channel": "ansible", "labels": labels, "ansible": {"connection": "local", "python": sys.executable}}
    response = api.put(f"/v1/devices/{device_id}/enrollment", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


def start_run(api: httpx.Client, playbook: str, **body: Any) -> dict[str, Any]:
    response = api.post("/v1/playbook-runs", json={"playbook": playbook, **body})
    assert response.status_code == 202, response.text
    return dict(response.json())


def wait_final(api: httpx.Client, run_id: str, timeout: float = 90) -> dict[str, Any]:
    def final() -> dict[str, Any] | None:
        run = api.get(f"/v1/playbook-runs/{run_id}").json()
        return run if run["status"] in ("succeeded", "failed", "cancelled") else None

    return wait_for(final, timeout=timeout, what=f"playbook run {run_id} to end")


def hosts_of(run: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {h["host"]: h for h in run["hosts"]}


def test_facts_run_updates_the_devices_hardware(api: httpx.Client) -> None:
    enrolled = enroll_local(api, "pb-facts-1", site="lab")
    assert enrolled["channel"] == "ansible" and enrolled["ansible"]["connection"] == "local"
    assert enrolled["hardware"] is None and enrolled["presence"] == "unknown"

    run = start_run(api, "facts", hosts=["pb-facts-1"], extra_vars={"api_token": "s3cret", "x": 1})
    assert run["status"] == "queued" and run["extra_vars"] == {"api_token": "***", "x": 1}
    done = wait_final(api, run["id"])

    assert done["status"] == "succeeded", done
    host = hosts_of(done)["pb-facts-1"]
    assert host["status"] == "ok" and host["result"]["hardware"]["memory_mb"] == 1234
    device = api.get("/v1/devices/pb-facts-1").json()
    assert device["hardware"]["memory_mb"] == 1234 and device["gpu_class"] == "cpu-x86_64"
    assert device["presence"] == "online" and device["ansible"]["python"] == sys.executable
    assert done["id"] in [r["id"] for r in api.get("/v1/playbook-runs").json()]


def test_a_selector_picks_the_ansible_devices_that_match(api: httpx.Client) -> None:
    enroll_local(api, "pb-sel-1", site="sel-site")
    enroll_local(api, "pb-sel-2", site="sel-site")
    api.put("/v1/devices/pb-sel-3/enrollment", json={"channel": "mqtt", "labels": {"site": "sel-site"}})

    done = wait_final(api, start_run(api, "facts", selector="site=sel-site")["id"])

    assert done["status"] == "succeeded" and done["selector"] == "site=sel-site"
    assert sorted(hosts_of(done)) == ["pb-sel-1", "pb-sel-2"]


def test_reported_state_from_a_push_lands_and_keeps_the_enrollment(api: httpx.Client) -> None:
    enroll_local(api, "pb-push-1", site="push")
    enroll_local(api, "pb-push-2", site="push")
    # A generation the control plane issued (none yet: 0); one it never issued would be refused (test_device_trust).
    state = reported("pb-push-1", applied=0, labels={"site": "push"}).model_dump(mode="json")
    state["channel"] = "ansible"
    reports = {"pb-push-1": state, "pb-push-2": {"device_id": "pb-push-2", "not": "a reported state"}}

    done = wait_final(api, start_run(api, "deploy_model", hosts=["pb-push-1", "pb-push-2"], extra_vars={
        "reports": reports, "sleep_host": "none", "fail_host": "pb-push-2"})["id"])  # fmt: skip

    assert done["status"] == "failed"
    first, second = hosts_of(done)["pb-push-1"], hosts_of(done)["pb-push-2"]
    assert (first["status"], second["status"]) == ("ok", "failed")
    assert second["message"] == "the agent refused generation 7"
    assert second["result"]["reported"]["not"] == "a reported state"  # stored as handed back, ignored by the fleet
    device = api.get("/v1/devices/pb-push-1").json()
    assert device["reported"]["applied_generation"] == 0 and device["reported"]["agent_version"] == "0.1.0"
    assert device["channel"] == "ansible" and device["ansible"]["connection"] == "local"
    assert api.get("/v1/devices/pb-push-2").json()["reported"] is None


def test_an_unreachable_host_fails_alone_with_the_reason(api: httpx.Client) -> None:
    enroll_local(api, "pb-up-1")
    closed = {"channel": "ansible", "ansible": {"host": "127.0.0.1", "port": free_port(), "user": "nobody"}}
    assert api.put("/v1/devices/pb-down-1/enrollment", json=closed).status_code == 200

    done = wait_final(api, start_run(api, "facts", hosts=["pb-up-1", "pb-down-1"])["id"])

    assert done["status"] == "failed" and "unreachable" in done["error"]
    up, down = hosts_of(done)["pb-up-1"], hosts_of(done)["pb-down-1"]
    assert up["status"] == "ok" and up["result"]["hardware"]["cpu_count"] == 3
    assert down["status"] == "unreachable" and "Connection refused" in down["message"]


def read_stream(api: httpx.Client, run_id: str, last_id: int = 0) -> list[tuple[int | None, str, dict[str, Any]]]:
    headers = {"Last-Event-ID": str(last_id)} if last_id else {}
    with api.stream("GET", f"/v1/playbook-runs/{run_id}/events", headers=headers, timeout=60) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        return [(e.id, e.event, json.loads(e.data)) for e in parse_sse(response.iter_lines())]


def test_the_event_stream_is_ordered_resumable_and_ends_with_the_run(api: httpx.Client) -> None:
    enroll_local(api, "pb-sse-1")
    run = start_run(api, "facts", hosts=["pb-sse-1"])

    events = read_stream(api, run["id"])  # follows the run live; returns because the stream ends

    ids = [i for i, _, _ in events]
    assert ids == sorted(ids) and len(set(ids)) == len(ids) and all(i is not None for i in ids)
    kinds = [k for _, k, _ in events]
    assert kinds[0] == "playbook_on_play_start" and kinds[-1] == "playbook_on_stats"
    assert "pb-sse-1: ok: Hand the hardware facts back" in [d["message"] for _, _, d in events]
    assert api.get(f"/v1/playbook-runs/{run['id']}").json()["status"] == "succeeded"
    resumed = read_stream(api, run["id"], last_id=ids[2] or 0)
    assert [i for i, _, _ in resumed] == ids[3:]
    assert api.get("/v1/playbook-runs/nope/events").status_code == 404


def test_cancel_stops_a_running_run_quickly(api: httpx.Client) -> None:
    enroll_local(api, "pb-slow-1")
    enroll_local(api, "pb-slow-2")
    run = start_run(api, "deploy_model", hosts=["pb-slow-1", "pb-slow-2"], extra_vars={"sleep_host": "pb-slow-1"})
    wait_for(lambda: slow_task_started(api, run["id"]), timeout=60, what="the slow task to start")
    started = datetime.now(UTC)

    answer = api.post(f"/v1/playbook-runs/{run['id']}/cancel")
    assert answer.status_code == 202, answer.text
    done = wait_final(api, run["id"], timeout=20)

    assert done["status"] == "cancelled"
    assert (datetime.now(UTC) - started).total_seconds() < 15
    again = api.post(f"/v1/playbook-runs/{run['id']}/cancel")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]


def slow_task_started(api: httpx.Client, run_id: str) -> bool:
    """Whether the event stream has shown the start of the slow task (read until then, or for at most 3 s)."""
    assert api.get(f"/v1/playbook-runs/{run_id}").json()["status"] in ("queued", "running")
    try:
        with api.stream("GET", f"/v1/playbook-runs/{run_id}/events", timeout=3) as response:
            for event in parse_sse(response.iter_lines()):
                data = json.loads(event.data)
                if data["kind"] == "playbook_on_task_start" and data["task"] == "Take a while":
                    return True
    except httpx.ReadTimeout:
        pass
    return False


def test_only_the_newest_run_directories_are_kept(api: httpx.Client, server: RunningServer) -> None:
    enroll_local(api, "pb-rot-1")
    runs = [start_run(api, "facts", hosts=["pb-rot-1"])["id"] for _ in range(KEEP_RUNS + 2)]
    for run_id in runs:
        wait_final(api, run_id)

    kept = {d.name for d in server.settings.playbook_runs_dir.iterdir()}
    assert len(kept) == KEEP_RUNS
    assert kept <= set(runs) and runs[-1] in kept


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        pytest.param("post", "/v1/playbook-runs", {"playbook": "rm-rf", "hosts": ["x"]}, "deploy_model", id="playbook"),
        pytest.param("post", "/v1/playbook-runs", {"playbook": "facts"}, "selector or hosts", id="no-hosts"),
        pytest.param(
            "post", "/v1/playbook-runs", {"playbook": "facts", "hosts": ["a"], "selector": "a=b"}, "exactly one",
            id="both",
        ),
        pytest.param("post", "/v1/playbook-runs", {"playbook": "facts", "hosts": ["a/b"]}, "hosts", id="host-id"),
        pytest.param("post", "/v1/playbook-runs", {"playbook": "facts", "hosts": ["pb-ghost"]}, "pb-ghost",
                     id="unknown-host"),
        pytest.param("post", "/v1/playbook-runs", {"playbook": "facts", "selector": "site=nowhere"}, "matches no",
                     id="empty-selector"),
        pytest.param("put", "/v1/devices/bad..id/enrollment", {}, "device_id", id="device-id"),
        pytest.param("put", "/v1/devices/pb-x/enrollment", {"labels": {"/bad": "v"}}, "labels", id="label-key"),
        pytest.param("put", "/v1/devices/pb-x/enrollment", {"labels": {"k": "v" * 200}}, "labels", id="label-value"),
        pytest.param("put", "/v1/devices/pb-x/enrollment", {"channel": "pigeon"}, "channel", id="channel"),
        pytest.param("put", "/v1/devices/pb-x/enrollment", {"ansible": {"port": 0}}, "ansible.port", id="port"),
        pytest.param("put", "/v1/devices/pb-x/enrollment", {"ansible": {"connection": "winrm"}}, "ansible.connection",
                     id="connection"),
        pytest.param("put", "/v1/devices/pb-x/enrollment", {"ansible": {"python": "python; rm -rf /"}},
                     "ansible.python", id="python"),
        pytest.param("put", "/v1/devices/pb-x/enrollment", {"hardware": {"arch": "x86_64"}}, "hardware.gpu_class",
                     id="hardware"),
    ],
)  # fmt: skip
def test_bad_requests_are_refused_naming_the_field(
    api: httpx.Client, method: str, path: str, body: dict[str, Any], field: str
) -> None:
    response = api.request(method.upper(), path, json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    text_ = (
        detail if isinstance(detail, str) else " ".join(".".join(map(str, d["loc"])) + " " + d["msg"] for d in detail)
    )
    assert field in text_
    assert api.get("/v1/devices/pb-x").status_code == 404


def test_a_device_without_an_ansible_connection_is_a_conflict(api: httpx.Client) -> None:
    api.put("/v1/devices/pb-mqtt-1/enrollment", json={"channel": "mqtt"})
    response = api.post("/v1/playbook-runs", json={"playbook": "facts", "hosts": ["pb-mqtt-1"]})
    assert response.status_code == 409 and "pb-mqtt-1" in response.json()["detail"]


def test_forget_removes_the_device(api: httpx.Client) -> None:
    enroll_local(api, "pb-gone-1", site="gone")
    assert api.delete("/v1/devices/pb-gone-1").status_code == 204
    assert api.get("/v1/devices/pb-gone-1").status_code == 404
    assert api.delete("/v1/devices/pb-gone-1").status_code == 404


def edgectl(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [EDGECTL, "--url", server.url, *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, env=python_env(), check=False)


def test_edgectl_enrolls_runs_with_wait_and_forgets(server: RunningServer) -> None:
    enrolled = edgectl(server, "--json", "devices", "enroll", "pb-cli-1", "--connection", "local",
                       "--python", sys.executable, "--label", "site=cli")  # fmt: skip
    assert enrolled.returncode == 0, enrolled.stderr
    assert json.loads(enrolled.stdout)["labels"] == {"site": "cli"}

    ok = edgectl(server, "playbook", "run", "facts", "--selector", "site=cli", "-e", "n=1", "--wait")
    assert ok.returncode == 0, ok.stderr
    assert "pb-cli-1: ok: Hand the hardware facts back" in ok.stderr and "succeeded" in ok.stderr

    failed = edgectl(server, "playbook", "run", "deploy_model", "--host", "pb-cli-1", "-e", "fail_host=pb-cli-1",
                     "-e", "sleep_host=none", "--wait")  # fmt: skip
    assert failed.returncode == 1 and "the agent refused generation 7" in failed.stderr + failed.stdout

    listed = json.loads(edgectl(server, "--json", "playbook", "runs", "--limit", "2").stdout)
    assert [r["playbook"] for r in listed] == ["deploy_model", "facts"]
    shown = edgectl(server, "playbook", "show", listed[0]["id"])
    assert shown.returncode == 0 and "pb-cli-1" in shown.stdout and "failed" in shown.stdout
    watched = edgectl(server, "playbook", "watch", listed[1]["id"])
    assert watched.returncode == 0 and "playbook_on_stats" not in watched.stderr and "stats:" in watched.stderr
    refused = edgectl(server, "playbook", "cancel", listed[1]["id"])
    assert refused.returncode == 1 and "409" in refused.stderr

    assert edgectl(server, "devices", "forget", "pb-cli-1").returncode == 0
    assert edgectl(server, "devices", "show", "pb-cli-1").returncode == 1


@pytest.mark.skipif(not (REAL_PLAYBOOKS / "facts.yml").is_file(), reason="playbooks/facts.yml is not there yet")
def test_the_real_facts_playbook_reports_this_hosts_hardware(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """playbooks/facts.yml on this host: its agent is this virtualenv's `edge-agent` (prefix/venv -> the venv)."""
    prefix = tmp_path / "prefix"
    prefix.mkdir()
    (prefix / "venv").symlink_to(Path(sys.executable).parent.parent)
    every_host = {"edge_agent_prefix": str(prefix), "edge_agent_fact_path": str(tmp_path / "facts.d")}
    settings = server_settings(mosquitto, tmp_path / "data")
    running = start_server(settings.model_copy(update={"ansible": AnsibleSettings(vars=every_host)}))
    try:
        enroll_local(running.http, "pb-real-1")
        done = wait_final(running.http, start_run(running.http, "facts", hosts=["pb-real-1"])["id"], timeout=240)
        assert done["status"] == "succeeded", done
        device = running.http.get("/v1/devices/pb-real-1").json()
        assert device["hardware"] is not None and device["gpu_class"] == device["hardware"]["gpu_class"]
        assert device["hardware"]["cpu_count"] >= 1
    finally:
        running.stop()


def test_a_run_interrupted_by_a_restart_is_failed(mosquitto: Mosquitto, tmp_path: Path) -> None:
    server = ControlPlaneProcess(
        mosquitto, tmp_path / "data", extra_env={"EDGE_CP_ANSIBLE__PLAYBOOKS_DIR": str(PLAYBOOKS)}
    )
    server.start()
    try:
        with server.client() as api:
            enroll_local(api, "pb-restart-1")
            run = start_run(api, "deploy_model", hosts=["pb-restart-1"],
                            extra_vars={"sleep_host": "pb-restart-1", "sleep_s": 20})  # fmt: skip
            wait_for(lambda: api.get(f"/v1/playbook-runs/{run['id']}").json()["status"] == "running", what="running")
        server.kill()
        server.start()
        with server.client() as api:
            after = api.get(f"/v1/playbook-runs/{run['id']}").json()
            assert (after["status"], after["error"]) == ("failed", "the control plane restarted during the run")
            assert after["finished_at"] is not None
    finally:
        server.stop()


def test_0004_keeps_devices_and_lets_a_device_with_rollout_history_go(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine, "0003")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA foreign_keys=OFF")  # no build behind the rollout: history only
        conn.execute(
            text("INSERT INTO devices (id, created_at, gpu_class, labels, channel, desired_generation)"
                 " VALUES ('dev-old', :t, 'cpu-x86_64', '{\"site\": \"a\"}', 'mqtt', 2)"),
            {"t": now},
        )  # fmt: skip
        conn.execute(text("INSERT INTO models (name, created_at) VALUES ('m', :t)"), {"t": now})
        conn.execute(
            text("INSERT INTO rollouts (id, model_name, version, selector, strategy, phase, created_at, updated_at)"
                 " VALUES ('r1', 'm', 1, '{}', 'all-at-once', 'succeeded', :t, :t)"),
            {"t": now},
        )  # fmt: skip
        conn.execute(
            text("INSERT INTO rollout_devices (rollout_id, device_id, target, build_id, generation, status,"
                 " updated_at, step) VALUES ('r1', 'dev-old', 'cpu-x86_64', 'b1', 2, 'activated', :t, 'all')"),
            {"t": now},
        )  # fmt: skip
        conn.commit()
        conn.exec_driver_sql("PRAGMA foreign_keys=ON")
    migrate(engine)

    fleet = FleetRepository(engine)
    device = fleet.get_device("dev-old")
    assert device is not None and device.labels == {"site": "a"} and device.desired_generation == 2
    assert device.ansible is None and device.delivery_failure is None
    fleet.remove_device("dev-old")
    assert fleet.get_device("dev-old") is None
    with engine.connect() as conn:
        assert conn.execute(text("SELECT device_id FROM rollout_devices")).scalars().all() == ["dev-old"]
        assert conn.execute(text("SELECT count(*) FROM playbook_runs")).scalar() == 0
    engine.dispose()
