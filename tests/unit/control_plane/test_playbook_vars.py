"""The pure rules of what the API may hand a playbook (control_plane.domain.playbook_vars): declarations and their
mistakes, the checks of a request's extra vars, and redaction of secrets at any depth. The same rules attacked
through the real ansible-runner: tests/integration/control_plane/test_playbook_trust.py."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from control_plane.domain.playbook_vars import (
    DeclarationError,
    VarSpec,
    VarType,
    check_extra_vars,
    looks_secret,
    parse_declarations,
    redact,
    scrub,
    secret_values,
)
from control_plane.domain.playbooks import PlaybookName

PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n"
DECLARED = {
    "channel": VarSpec("channel", VarType.STR, choices=("mqtt", "ansible")),
    "package": VarSpec("package", VarType.STR, pattern=r"[a-z-]+(==[0-9.]+)?"),
    "port": VarSpec("port", VarType.INT, min=1, max=65535),
    "keep": VarSpec("keep", VarType.BOOL),
    "labels": VarSpec("labels", VarType.MAP),
    "dirs": VarSpec("dirs", VarType.LIST),
}


ALLOWED = "channel, dirs, keep, labels, package, port"


def problems(values: dict[str, Any]) -> list[str]:
    return check_extra_vars(PlaybookName.PROVISION, DECLARED, values)


def test_declared_values_of_the_right_type_pass() -> None:
    assert problems({"channel": "ansible", "package": "edge-orchestrator==0.2", "port": 8500, "keep": False,
                     "labels": {"site": "a", "n": [1, 2.5, None, {"ok": True}]}, "dirs": ["/srv/a"]}) == []  # fmt: skip


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        pytest.param({"rm": 1}, f"extra_vars.rm: provision.yml does not declare rm; it allows: {ALLOWED}", id="rm"),
        pytest.param(
            {"ansible_become_pass": "x"}, "extra_vars.ansible_become_pass: ansible_become_pass is never", id="bp"
        ),
        pytest.param({"ansible_ssh_common_args": "-o ProxyCommand=x"}, "is never taken", id="ssh-args"),
        pytest.param({"inventory_hostname": "x"}, "is never taken", id="magic"),
        pytest.param({"port": "8500"}, "extra_vars.port: must be int, got str", id="int-as-text"),
        pytest.param({"port": True}, "extra_vars.port: must be int, got bool", id="bool-as-int"),
        pytest.param({"port": 0}, "extra_vars.port: must be within [1, 65535]", id="below-min"),
        pytest.param({"keep": "yes"}, "extra_vars.keep: must be bool, got str", id="bool"),
        pytest.param({"labels": ["a"]}, "extra_vars.labels: must be map, got list", id="map"),
        pytest.param({"channel": "pigeon"}, "extra_vars.channel: must be one of mqtt, ansible", id="choices"),
        pytest.param({"package": "git+https://evil/x"}, "extra_vars.package: must match", id="pattern"),
        pytest.param({"dirs": ["a", "{{ lookup('pipe', 'id') }}"]}, "extra_vars.dirs[1]: holds '{{'", id="list"),
        pytest.param({"labels": {"a": {"b": "{% set x = 1 %}"}}}, "extra_vars.labels.a.b: holds '{%'", id="nested"),
        pytest.param({"labels": {"{# c #}": 1}}, "extra_vars.labels: a key holds '{#'", id="key"),
        pytest.param({"dirs": ["#jinja2: variable_start_string: '[%'"]}, "holds '#jinja2:'", id="override"),
        pytest.param({"labels": {"x": "a" * 20_000}}, "extra_vars.labels.x: longer than", id="long"),
        pytest.param({"dirs": [[[[[[[[["deep"]]]]]]]]]}, "nested deeper than 8", id="deep"),
        pytest.param({"labels": {"x": object()}}, "extra_vars.labels.x: must be JSON data", id="not-json"),
    ],
)
def test_bad_extra_vars_are_named_without_their_values(values: dict[str, Any], expected: str) -> None:
    found = problems(values)
    assert len(found) == 1 and expected in found[0], found
    assert "lookup" not in found[0] and "evil" not in found[0]


def test_every_problem_is_reported() -> None:
    found = problems({"a": 1, "ansible_host": "h", "port": "x", "labels": {"p": "{{ x }}"}})
    assert [p.split(":")[0] for p in found] == [
        "extra_vars.a", "extra_vars.ansible_host", "extra_vars.labels.p", "extra_vars.port"
    ]  # fmt: skip


def test_a_playbook_that_declares_nothing_takes_nothing() -> None:
    found = check_extra_vars(PlaybookName.FACTS, {}, {"x": 1})
    assert found == ["extra_vars.x: facts.yml does not declare x; it allows: none"]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        pytest.param({"rm_rf": {}}, "unknown playbook 'rm_rf'", id="playbook"),
        pytest.param({"provision": {"ansible_user": {"type": "str"}}}, "ansible_user is reserved", id="ansible"),
        pytest.param({"provision": {"hostvars": {"type": "map"}}}, "hostvars is reserved", id="magic"),
        pytest.param({"provision": {"a-b": {"type": "str"}}}, "not a variable name", id="name"),
        pytest.param({"provision": {"a": {"type": "float"}}}, "type must be one of", id="type"),
        pytest.param({"provision": {"a": {"type": "int", "choices": ["1"]}}}, "are for str", id="choices-on-int"),
        pytest.param({"provision": {"a": {"type": "str", "max": 3}}}, "are for int", id="max-on-str"),
        pytest.param({"provision": {"a": {"type": "str", "pattern": "("}}}, "pattern", id="bad-pattern"),
        pytest.param({"provision": {"a": {"type": "str", "default": "x"}}}, "unknown keys default", id="key"),
        pytest.param(["provision"], "expected a mapping", id="not-a-map"),
    ],
)
def test_malformed_declarations_are_refused_naming_the_entry(document: object, expected: str) -> None:
    with pytest.raises(DeclarationError, match=re.escape(expected)):
        parse_declarations(document, "api_vars.yml")


def test_the_shipped_declarations_cover_every_playbook_and_name_variables_the_playbooks_use() -> None:
    declared = parse_declarations(yaml.safe_load((PLAYBOOKS / "api_vars.yml").read_text()), "api_vars.yml")
    assert set(declared) == set(PlaybookName)
    used = "\n".join(p.read_text() for p in PLAYBOOKS.rglob("*") if p.suffix in (".yml", ".j2") and p.is_file()
                     and p.name != "api_vars.yml")  # fmt: skip
    for playbook, variables in declared.items():
        for name in variables:
            assert re.search(rf"\b{name}\b", used), f"{playbook.value}: {name} is declared but no playbook uses it"


SECRET_KEYS = """password MQTT_PASSWORD ansible_become_pass ssh_pass passwd api_token edge_control_plane_token
    client_secret ssh_private_key apiKey key tls-key pin credentials passphrase"""
PLAIN_KEYS = "host edge_control_plane_public_key public-key keep_data passthrough monkey build_id sleep_host"


@pytest.mark.parametrize(
    ("key", "secret"),
    [
        *[pytest.param(k, True, id=k) for k in SECRET_KEYS.split()],
        *[pytest.param(k, False, id=k) for k in PLAIN_KEYS.split()],
    ],
)
def test_which_keys_look_secret(key: str, secret: bool) -> None:
    assert looks_secret(key) is secret


def test_secrets_are_redacted_at_any_depth_and_in_lists() -> None:
    given: dict[str, Any] = {
        "ansible_become_pass": "b",
        "edge_agent_mqtt": {"host": "broker", "password": "p", "tls": {"client_key": "k", "ca": "c"}},
        "entries": [{"token": "t"}, "plain", [{"secret": {"deep": "d"}}]],
        "note": PEM,
        "edge_control_plane_public_key": "pub",
        "n": 3,
    }
    assert redact(given) == {
        "ansible_become_pass": "***",
        "edge_agent_mqtt": {"host": "broker", "password": "***", "tls": {"client_key": "***", "ca": "c"}},
        "entries": [{"token": "***"}, "plain", [{"secret": "***"}]],
        "note": "***",
        "edge_control_plane_public_key": "pub",
        "n": 3,
    }
    assert given["edge_agent_mqtt"]["password"] == "p"  # a copy: the run still gets the real values


def test_secret_values_are_scrubbed_from_messages() -> None:
    values = {"mqtt": {"password": "hunter2-long"}, "pins": [{"pin": 123456}], "token": "abc", "site": "plant-1"}
    secrets = secret_values(values)
    assert secrets == {"hunter2-long", "123456"}  # "abc": too short to look for without garbling every line
    message = "dev-1: failed: login as plant-1 with hunter2-long (pin 123456) refused"
    assert scrub(message, secrets) == "dev-1: failed: login as plant-1 with *** (pin ***) refused"
