"""The pure parts of the playbook runner adapter: inventory, ansible-runner events -> RunEvents, final stats ->
host statuses, per-host results, the run's status; plus rotation of run directories and redaction."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from control_plane.adapters.playbook_runner import (
    HostCollector,
    PlaybookRunner,
    build_inventory,
    host_statuses,
    run_status,
    translate_event,
    unsafe_vars,
    unsafe_yaml,
)
from control_plane.domain.errors import Unavailable
from control_plane.domain.playbook_vars import DeclarationError, redact
from control_plane.domain.playbooks import AnsibleConnection, HostStatus, PlaybookName, RunStatus
from control_plane.settings import AnsibleSettings

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def ev(kind: str, counter: int = 1, **data: Any) -> dict[str, Any]:
    return {"event": kind, "counter": counter, "created": "2026-01-01T00:00:05.000000", "event_data": data}


def test_inventory_has_each_device_with_its_connection_and_the_common_vars() -> None:
    local = AnsibleConnection(connection="local", python="/usr/bin/python3").inventory_vars()
    ssh = AnsibleConnection(host="10.0.0.5", port=2222, user="edge").inventory_vars()
    inventory = build_inventory({"dev-1": local, "dev-2": {**ssh, "edge_bundle_dir": "/b"}}, {"url": "http://cp"})
    assert inventory == {
        "all": {
            "hosts": {
                "dev-1": {"ansible_connection": "local", "ansible_python_interpreter": "/usr/bin/python3"},
                "dev-2": {
                    "ansible_connection": "ssh",
                    "ansible_host": "10.0.0.5",
                    "ansible_port": 2222,
                    "ansible_user": "edge",
                    "edge_bundle_dir": "/b",
                },
            },
            "vars": {"url": "http://cp"},
        }
    }


@pytest.mark.parametrize(
    ("event", "message", "failed", "changed"),
    [
        pytest.param(ev("playbook_on_play_start", play="Push"), "play: Push", False, False, id="play"),
        pytest.param(ev("playbook_on_task_start", task="Copy"), "task: Copy", False, False, id="task"),
        pytest.param(ev("runner_on_ok", host="d1", task="Copy", res={"changed": True}), "d1: changed: Copy", False,
                     True, id="changed"),
        pytest.param(ev("runner_on_ok", host="d1", task="Ping", res={}), "d1: ok: Ping", False, False, id="ok"),
        pytest.param(ev("runner_on_failed", host="d1", task="Apply", res={"msg": "refused\nbadly"}),
                     "d1: failed: Apply: refused badly", True, False, id="failed-one-line"),
        pytest.param(ev("runner_on_failed", host="d1", task="Try", ignore_errors=True, res={"msg": "x"}),
                     "d1: failed (ignored): Try: x", False, False, id="ignored"),
        pytest.param(ev("runner_on_unreachable", host="d2", task="Ping", res={"msg": "Connection refused"}),
                     "d2: unreachable: Ping: Connection refused", True, False, id="unreachable"),
        pytest.param(ev("runner_on_skipped", host="d1", task="Sleep"), "d1: skipped: Sleep", False, False, id="skip"),
        pytest.param(ev("playbook_on_stats", ok={"d1": 2}, changed={"d1": 1}, dark={"d2": 1}),
                     "stats: d1 changed; d2 unreachable", False, False, id="stats"),
    ],
)  # fmt: skip
def test_runner_events_become_one_line_run_events(
    event: dict[str, Any], message: str, failed: bool, changed: bool
) -> None:
    run_event = translate_event("r1", event, NOW)
    assert run_event is not None
    assert (run_event.message, run_event.failed, run_event.changed) == (message, failed, changed)
    assert run_event.run_id == "r1" and run_event.seq == 1 and run_event.kind == event["event"]
    assert run_event.at == datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)


@pytest.mark.parametrize("kind", ["verbose", "runner_on_start", "playbook_on_start", "debug", ""])
def test_noise_is_not_shown(kind: str) -> None:
    assert translate_event("r1", {"event": kind, "event_data": {}}, NOW) is None


def test_a_malformed_event_still_translates() -> None:
    event = translate_event("r1", {"event": "runner_on_ok", "event_data": {"res": "not a dict"}, "created": "x"}, NOW)
    assert event is not None and event.message == "None: ok: ?" and event.at == NOW


@pytest.mark.parametrize(
    ("stats", "status"),
    [
        pytest.param({"ok": {"h": 3}}, HostStatus.OK, id="ok"),
        pytest.param({"ok": {"h": 3}, "changed": {"h": 1}}, HostStatus.CHANGED, id="changed"),
        pytest.param({"ok": {"h": 1}, "failures": {"h": 1}}, HostStatus.FAILED, id="failed"),
        pytest.param({"dark": {"h": 1}, "failures": {"h": 1}}, HostStatus.UNREACHABLE, id="unreachable-wins"),
        pytest.param({"skipped": {"h": 2}}, HostStatus.SKIPPED, id="skipped"),
        pytest.param({"ok": {"other": 1}}, HostStatus.PENDING, id="never-reached"),
        pytest.param({"ok": "garbage"}, HostStatus.PENDING, id="garbage"),
    ],
)
def test_final_stats_give_each_hosts_status(stats: dict[str, Any], status: HostStatus) -> None:
    assert host_statuses(stats, ["h"]) == {"h": status}


def test_the_collector_keeps_each_hosts_result_and_failure() -> None:
    collector = HostCollector(["d1", "d2", "d3"])
    collector.feed(ev("runner_on_ok", host="d1", res={"ansible_facts": {"edge_result": {"hardware": {"a": 1}}}}))
    collector.feed(ev("runner_on_ok", host="d2", res={"ansible_facts": {"edge_result": {"ok": False}}}))
    collector.feed(ev("runner_on_failed", host="d2", res={"msg": "agent refused"}))
    collector.feed(ev("runner_on_ok", host="intruder", res={"ansible_facts": {"edge_result": {}}}))
    collector.feed(ev("runner_on_ok", host="d3", res={"ansible_facts": {"edge_result": "not a mapping"}}))
    collector.feed(ev("playbook_on_stats", ok={"d1": 2, "d2": 1, "d3": 1}, failures={"d2": 1}))

    d1, d2, d3 = collector.host_results()
    assert (d1.status, d1.result, d1.message) == (HostStatus.OK, {"hardware": {"a": 1}}, None)
    assert (d2.status, d2.result, d2.message) == (HostStatus.FAILED, {"ok": False}, "agent refused")
    assert (d3.status, d3.result) == (HostStatus.OK, None)


def test_without_stats_a_stopped_run_keeps_what_was_seen() -> None:
    collector = HostCollector(["d1", "d2"])
    collector.feed(ev("runner_on_unreachable", host="d1", res={"msg": "no route"}))
    d1, d2 = collector.host_results()
    assert (d1.status, d1.message) == (HostStatus.UNREACHABLE, "no route")
    assert d2.status is HostStatus.PENDING


@pytest.mark.parametrize(
    ("runner_status", "rc", "status", "error"),
    [
        pytest.param("successful", 0, RunStatus.SUCCEEDED, None, id="ok"),
        pytest.param("canceled", 254, RunStatus.CANCELLED, None, id="cancelled"),
        pytest.param("timeout", 254, RunStatus.FAILED, "the run was stopped after the timeout of 60s", id="timeout"),
        pytest.param("failed", 2, RunStatus.FAILED, "a host failed (rc 2)", id="host-failed"),
        pytest.param("failed", 4, RunStatus.FAILED, "a host was unreachable (rc 4)", id="unreachable"),
        pytest.param("failed", 1, RunStatus.FAILED, "ansible-playbook ended with status failed (rc 1)", id="other"),
    ],
)
def test_the_runners_status_becomes_the_runs(runner_status: str, rc: int, status: RunStatus, error: str | None) -> None:
    assert run_status(runner_status, rc, 60) == (status, error)


def test_rotation_keeps_the_newest_run_directories(tmp_path: Path) -> None:
    runner = PlaybookRunner(AnsibleSettings(keep_runs=2), tmp_path, lambda: NOW)
    for age, name in enumerate(["new", "mid", "old", "oldest"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1_000_000 - age * 100, 1_000_000 - age * 100))
    runner.rotate()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mid", "new"]


@pytest.mark.parametrize("name", ["../etc/passwd", "missing.yml"])
def test_only_playbooks_inside_the_directory_are_run(tmp_path: Path, name: str) -> None:
    runner = PlaybookRunner(AnsibleSettings(playbooks_dir=tmp_path), tmp_path / "runs", lambda: NOW)
    with pytest.raises(Unavailable):
        runner.playbook_path(name)


def test_the_default_playbooks_dir_is_the_repositorys() -> None:
    assert AnsibleSettings().playbooks_dir == Path(__file__).resolve().parents[3] / "playbooks"


def test_secret_looking_extra_vars_are_redacted() -> None:
    shown = redact({"edge_control_plane_token": "t", "MQTT_PASSWORD": "p", "ssh_private_key": "k", "site": "a"})
    assert shown == {"edge_control_plane_token": "***", "MQTT_PASSWORD": "***", "ssh_private_key": "***", "site": "a"}


def test_every_string_of_the_vars_is_written_unsafe_and_round_trips() -> None:
    given = {"payload": "{{ lookup('pipe', 'id') }}", "nested": {"k": ["a", {"{{ x }}": "b"}], "n": 1, "ok": True}}
    text = unsafe_yaml({"all": {"vars": {"operator": "{{ inventory_hostname }}"}, "hosts": unsafe_vars(given)}})

    def scalars(node: yaml.Node) -> list[yaml.ScalarNode]:
        if isinstance(node, yaml.ScalarNode):
            return [node]
        children = node.value if isinstance(node, yaml.SequenceNode) else [x for kv in node.value for x in kv]
        return [s for child in children for s in scalars(child)]

    root = yaml.compose(text)
    assert root is not None
    nodes = scalars(root)
    tagged = {n.value for n in nodes if n.tag == "!unsafe"}
    assert tagged == {"{{ lookup('pipe', 'id') }}", "k", "a", "{{ x }}", "b", "n", "ok"}  # keys below the names too
    plain = {n.value for n in nodes if n.tag == "tag:yaml.org,2002:str"}
    assert plain == {"all", "vars", "operator", "{{ inventory_hostname }}", "hosts", "payload", "nested"}

    class UnsafeAsText(yaml.SafeLoader):
        pass

    UnsafeAsText.add_constructor("!unsafe", lambda loader, node: loader.construct_scalar(node))  # type: ignore[arg-type]
    assert yaml.load(text, Loader=UnsafeAsText)["all"] == {
        "vars": {"operator": "{{ inventory_hostname }}"},
        "hosts": given,
    }


def test_declarations_are_read_from_the_playbooks_directory(tmp_path: Path) -> None:
    runner = PlaybookRunner(AnsibleSettings(playbooks_dir=tmp_path), tmp_path / "runs", lambda: NOW)
    assert runner.declared_vars() == {}  # no file: nothing may be set
    (tmp_path / "api_vars.yml").write_text("facts:\n  n: {type: int}\n")
    assert list(runner.declared_vars()[PlaybookName.FACTS]) == ["n"]
    (tmp_path / "api_vars.yml").write_text("facts:\n  ansible_user: {type: str}\n")
    with pytest.raises(DeclarationError, match="ansible_user is reserved"):
        runner.declared_vars()
