"""The trust boundary of the Ansible channel, attacked through the real ansible-runner and ansible-playbook: values
handed to Ansible are data, never templates, and playbook secrets are redacted.

Every attack carries `{{ lookup('pipe', 'touch MARKER') }}` (or a `{% ... %}` statement doing the same), which
Ansible runs on the controller while templating; the proof that nothing ran is that MARKER is never created. The
playbooks are the doubles in tests/integration/control_plane/playbooks/ (their `api_vars.yml` declares what each
takes); `provision.yml` there renders its extra vars on the controller before any host is contacted (as the real
upgrade_agent.yml's `serial` does), then shows, hands back and writes what the play saw. A control test runs the
same attacks through plain `ansible-playbook -e` and sees MARKER appear, so the payloads are live.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from control_plane.adapters.playbook_runner import PlaybookRunner
from control_plane.domain.playbooks import HostStatus, PlaybookJob, PlaybookName, RunEvent, RunStatus
from control_plane.settings import AnsibleSettings
from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.integration.control_plane.test_playbook_runs import PLAYBOOKS, enroll_local, read_stream, wait_final
from tests.support import Mosquitto, free_port, python_env

pytestmark = pytest.mark.integration

PASSWORD = "hunter2-nested-pw"
LIST_TOKEN = "tok-in-a-list-42"
TOP_TOKEN = "top-level-token-7"


def pipe(marker: Path) -> str:
    return f"{{{{ lookup('pipe', 'touch {marker}') }}}}"


def statement(marker: Path) -> str:
    return f"{{% set _ = lookup('pipe', 'touch {marker}') %}}"


@pytest.fixture(scope="module")
def server(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    settings = server_settings(mosquitto, tmp_path_factory.mktemp("cp-trust"))
    running = start_server(settings.model_copy(update={"ansible": AnsibleSettings(playbooks_dir=PLAYBOOKS)}))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def api(server: RunningServer) -> httpx.Client:
    return server.http


@pytest.fixture(scope="module")
def unreachable(server: RunningServer) -> str:
    """A device Ansible would reach by ssh on a port nobody listens on."""
    body = {"channel": "ansible", "ansible": {"host": "127.0.0.1", "port": free_port(), "user": "nobody"}}
    assert server.http.put("/v1/devices/trust-down/enrollment", json=body).status_code == 200
    return "trust-down"


def run_ids(api: httpx.Client) -> list[str]:
    return [r["id"] for r in api.get("/v1/playbook-runs", params={"limit": 1000}).json()]


def refused(api: httpx.Client, body: dict[str, Any]) -> str:
    """POST the run; assert it is refused with 422 and that nothing was queued (so nothing can run later)."""
    before = run_ids(api)
    response = api.post("/v1/playbook-runs", json=body)
    assert response.status_code == 422, response.text
    assert run_ids(api) == before
    detail: str = response.json()["detail"]
    return detail


Attack = Callable[[str], dict[str, Any]]
LIVE_ATTACKS = [
    pytest.param(lambda p: {"payload": p}, "extra_vars.payload", id="top-level"),
    pytest.param(lambda p: {"settings": {"mqtt": {"host": p}}}, "extra_vars.settings.mqtt.host", id="nested"),
    pytest.param(lambda p: {"entries": ["fine", {"x": p}]}, "extra_vars.entries[1].x", id="in-a-list"),
]
TEMPLATES = pytest.mark.parametrize("template", [pipe, statement], ids=["expression", "statement"])


@pytest.mark.parametrize(
    ("attack", "where"),
    # Ansible does not render map keys, but a key is no place for a template either.
    [*LIVE_ATTACKS, pytest.param(lambda p: {"settings": {p: "value"}}, "extra_vars.settings", id="map-key")],
)
@TEMPLATES
def test_a_templated_extra_var_is_refused_and_never_runs(
    api: httpx.Client, unreachable: str, tmp_path: Path, attack: Attack, where: str, template: Callable[[Path], str]
) -> None:
    marker = tmp_path / "MARKER"

    detail = refused(api, {"playbook": "provision", "hosts": [unreachable], "extra_vars": attack(template(marker))})

    assert where in detail and "never Jinja templates" in detail
    assert "lookup" not in detail  # the value is never echoed (it could be a secret)
    assert not marker.exists()


@pytest.mark.parametrize(("attack", "where"), LIVE_ATTACKS)
@TEMPLATES
def test_control_the_same_attacks_run_when_handed_to_ansible_playbook_plainly(
    tmp_path: Path, attack: Attack, where: str, template: Callable[[Path], str]
) -> None:
    marker = tmp_path / "MARKER"
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(json.dumps({"all": {"hosts": {"down-1": {"ansible_host": "127.0.0.1",
                                                                  "ansible_port": free_port()}}}}))  # fmt: skip
    argv = [str(Path(sys.executable).parent / "ansible-playbook"), "-i", str(inventory),
            str(PLAYBOOKS / "provision.yml"), "-e", json.dumps(attack(template(marker)))]  # fmt: skip
    env = {**python_env(), "ANSIBLE_LOCAL_TEMP": str(tmp_path / "tmp")}

    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env, check=False)

    assert done.returncode == 4, done.stdout + done.stderr  # the host was never reached ...
    assert marker.exists()  # ... and the template ran all the same


@pytest.mark.parametrize(
    ("name", "value"),
    [
        pytest.param("ansible_become_pass", "s3cret", id="become-pass"),
        pytest.param("ansible_host", "10.9.9.9", id="host"),
        pytest.param("ansible_user", "root", id="user"),
        pytest.param("ansible_ssh_common_args", "-o ProxyCommand='touch /tmp/x'", id="ssh-args"),
        pytest.param("ansible_python_interpreter", "/bin/sh", id="python"),
        pytest.param("ansible_connection", "local", id="connection"),
        pytest.param("hostvars", {}, id="magic-var"),
    ],
)
def test_connection_and_privilege_variables_are_never_taken(
    api: httpx.Client, unreachable: str, name: str, value: Any
) -> None:
    detail = refused(api, {"playbook": "provision", "hosts": [unreachable], "extra_vars": {name: value}})

    assert f"extra_vars.{name}" in detail and "never taken from the API" in detail
    assert "allows: echo_file, entries, fail_loudly, payload, settings" in detail


@pytest.mark.parametrize(
    ("playbook", "extra_vars", "expected"),
    [
        pytest.param("facts", {"rm": "-rf"}, "facts.yml does not declare rm; it allows: api_token, n, x", id="unknown"),
        pytest.param("facts", {"x": "one"}, "extra_vars.x: must be int, got str", id="type"),
        pytest.param("facts", {"x": True}, "extra_vars.x: must be int, got bool", id="bool-is-no-int"),
        pytest.param("deploy_model", {"sleep_s": 9999}, "extra_vars.sleep_s: must be within [0, 600]", id="bounds"),
        pytest.param("provision", {"entries": [[[[[[[[["deep"]]]]]]]]]}, "nested deeper than 8", id="depth"),
    ],
)
def test_undeclared_or_mistyped_variables_are_refused_naming_them(
    api: httpx.Client, playbook: str, extra_vars: dict[str, Any], expected: str
) -> None:
    enroll_local(api, "trust-local-1")
    assert expected in refused(api, {"playbook": playbook, "hosts": ["trust-local-1"], "extra_vars": extra_vars})


def test_secrets_at_any_depth_reach_the_play_but_are_never_shown(
    api: httpx.Client, server: RunningServer, tmp_path: Path
) -> None:
    enroll_local(api, "trust-secret-1")
    echo_file = tmp_path / "seen.json"
    extra_vars = {
        "settings": {"mqtt": {"host": "broker", "password": PASSWORD}},
        "entries": [{"token": LIST_TOKEN}, "plain"],
        "payload": "visible",
        "echo_file": str(echo_file),
        "fail_loudly": True,  # the double fails with a message that prints every value
    }
    body = {"playbook": "provision", "hosts": ["trust-secret-1"], "extra_vars": extra_vars}
    response = api.post("/v1/playbook-runs", json=body)
    assert response.status_code == 202, response.text
    run_id = response.json()["id"]
    events = read_stream(api, run_id)
    done = wait_final(api, run_id)

    seen = json.loads(echo_file.read_text())  # the play got the real values
    assert seen["settings"]["mqtt"]["password"] == PASSWORD and seen["entries"][0]["token"] == LIST_TOKEN
    shown = {
        "submitted": response.text,
        "run": json.dumps(done),
        "list": api.get("/v1/playbook-runs").text,
        "events": json.dumps([data for _, _, data in events]),
    }
    for what, text in shown.items():
        assert PASSWORD not in text and LIST_TOKEN not in text, what
    assert done["extra_vars"]["settings"] == {"mqtt": {"host": "broker", "password": "***"}}
    assert done["extra_vars"]["entries"] == [{"token": "***"}, "plain"]
    host = done["hosts"][0]
    assert host["status"] == "failed" and "cannot log in with" in host["message"] and "***" in host["message"]
    assert host["result"]["echo"]["settings"]["mqtt"] == {"host": "broker", "password": "***"}
    failed = [data["message"] for _, _, data in events if data["kind"] == "runner_on_failed"]
    assert len(failed) == 1 and '"password": "***"' in failed[0] and '"payload": "visible"' in failed[0]
    run_dir = server.settings.playbook_runs_dir / run_id
    assert not (run_dir / "env" / "extravars").exists()  # the real values' file is gone with the run
    assert run_dir.stat().st_mode & 0o077 == 0


def test_a_top_level_secret_is_redacted(api: httpx.Client) -> None:
    enroll_local(api, "trust-secret-2")
    body = {"playbook": "facts", "hosts": ["trust-secret-2"], "extra_vars": {"api_token": TOP_TOKEN, "x": 1}}
    response = api.post("/v1/playbook-runs", json=body)
    assert response.status_code == 202, response.text
    done = wait_final(api, response.json()["id"])
    assert done["status"] == "succeeded" and done["extra_vars"] == {"api_token": "***", "x": 1}
    assert TOP_TOKEN not in api.get("/v1/playbook-runs").text


@pytest.mark.parametrize(
    ("ansible", "field"),
    [
        pytest.param({"python": "{{lookup('pipe','id')}}"}, "ansible.python", id="python-template"),
        pytest.param({"python": "-c"}, "ansible.python", id="python-option"),
        pytest.param({"host": "-oProxyCommand=touch"}, "ansible.host", id="host-option"),
        pytest.param({"host": "{{x}}"}, "ansible.host", id="host-template"),
        pytest.param({"user": "{{x}}"}, "ansible.user", id="user-template"),
        pytest.param({"ssh_common_args": "-o ProxyCommand=touch /tmp/x"}, "ansible.ssh_common_args", id="ssh-args"),
        pytest.param({"become_pass": "x"}, "ansible.become_pass", id="become"),
    ],
)
def test_an_enrollment_cannot_carry_templates_or_ssh_options(
    api: httpx.Client, ansible: dict[str, Any], field: str
) -> None:
    response = api.put("/v1/devices/trust-enroll/enrollment", json={"channel": "ansible", "ansible": ansible})
    assert response.status_code == 422, response.text
    assert field in " ".join(".".join(map(str, d["loc"])) for d in response.json()["detail"])
    assert api.get("/v1/devices/trust-enroll").status_code == 404


def test_the_runner_hands_templates_to_the_play_as_text(tmp_path: Path) -> None:
    """Defence in depth: the adapter alone, called without the API's checks, with templates in the extra vars
    (top level, nested, in a list, as a key) and in host variables, on a local and an unreachable host."""
    marker = tmp_path / "MARKER"
    payload = pipe(marker)
    runner = PlaybookRunner(AnsibleSettings(playbooks_dir=PLAYBOOKS), tmp_path / "runs", lambda: datetime.now(UTC))
    local = {"ansible_connection": "local", "ansible_python_interpreter": sys.executable, "edge_test_note": payload}
    down = {"ansible_host": "127.0.0.1", "ansible_port": free_port(), "ansible_user": payload}
    extra_vars = {
        "payload": payload,
        "settings": {"mqtt": {"password": payload}, payload: "as a key"},
        "entries": ["plain", payload],
    }
    job = PlaybookJob("direct-1", PlaybookName.PROVISION, {"local-1": local, "down-1": down}, extra_vars)
    events: list[RunEvent] = []

    outcome = runner.run(job, events.append, lambda: False)

    assert not marker.exists()
    hosts = {h.host: h for h in outcome.hosts}
    assert outcome.status is RunStatus.FAILED and hosts["down-1"].status is HostStatus.UNREACHABLE
    assert hosts["local-1"].status is HostStatus.OK and hosts["local-1"].result is not None
    assert hosts["local-1"].result["echo"] == {**extra_vars, "note": payload}  # the literal text reached the play
    assert "local-1: ok: Show what the play was given" in [e.message for e in events]
    assert not (tmp_path / "runs" / "direct-1" / "env" / "extravars").exists()
