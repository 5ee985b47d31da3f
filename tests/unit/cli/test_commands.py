"""`edgectl` as a user types it (typer's CliRunner): help, local validation, exit codes, output formats."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.cli.main import app
from tests.support import free_port

runner = CliRunner()
API_DOC = Path(__file__).resolve().parents[3] / "docs" / "api.md"


def _closed_port() -> int:
    """A port nothing listens on: reserved by `free_port`, so no other test process's server is handed it."""
    return free_port()


def documented_commands() -> list[list[str]]:
    """Every `edgectl ...` command of the REST table in docs/api.md, as its words up to the first argument."""
    found = []
    for line in API_DOC.read_text().splitlines():
        match = re.search(r"`edgectl ([a-z -]+?)(?: [A-Z-]|`| \[)", line)
        if line.startswith("|") and match:
            found.append(match.group(1).split())
    return found


def test_every_documented_command_exists_and_has_help() -> None:
    commands = documented_commands()
    assert len(commands) >= 20
    for words in commands:
        result = runner.invoke(app, [*words, "--help"])
        assert result.exit_code == 0, (words, result.output)
        assert "Usage:" in result.output


@pytest.mark.parametrize(
    "words",
    [["server"], ["config-help"], ["demo"], ["builds", "list"], ["rollout", "create"], ["train"]],
)
def test_extra_commands_have_help(words: list[str]) -> None:
    result = runner.invoke(app, [*words, "--help"])
    assert result.exit_code == 0
    assert "Usage:" in result.output


def test_server_help_points_to_the_settings() -> None:
    result = runner.invoke(app, ["server", "--help"])
    assert "EDGE_CP_" in result.output
    assert "config-help" in result.output


def test_config_help_lists_every_setting_with_its_env_var() -> None:
    result = runner.invoke(app, ["config-help"])
    assert result.exit_code == 0
    for env in ("EDGE_CP_PORT", "EDGE_CP_DATA_DIR", "EDGE_CP_MQTT__HOST", "EDGE_CP_MQTT__PASSWORD"):
        assert env in result.output


def test_config_help_as_json() -> None:
    result = runner.invoke(app, ["--json", "config-help"])
    rows = json.loads(result.output)
    port = next(r for r in rows if r["setting"] == "mqtt.port")
    assert port == {
        "setting": "mqtt.port",
        "env": "EDGE_CP_MQTT__PORT",
        "type": "int",
        "default": "1883",
        "description": "Broker port.",
    }


def test_unreachable_server_exits_2() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = runner.invoke(app, ["--url", url, "models", "list"])
    assert result.exit_code == 2
    assert f"cannot reach the control plane at {url}" in result.output


def test_url_from_environment() -> None:
    url = f"http://127.0.0.1:{_closed_port()}"
    result = runner.invoke(app, ["status"], env={"EDGECTL_URL": url})
    assert result.exit_code == 2
    assert url in result.output


def test_bad_training_spec_is_refused_before_sending(tmp_path: Path) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text("name: x\nmodel_name: m\nentrypoint: train.py\nparameters: {lr: [1]}\n")
    (tmp_path / "train.py").write_text("")
    url = f"http://127.0.0.1:{_closed_port()}"  # nothing listens: a request would exit 2, not 1
    result = runner.invoke(app, ["--url", url, "train", str(spec)])
    assert result.exit_code == 1
    assert str(spec) in result.output
    assert "parameters.lr" in result.output


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["devices", "list", "--selector", "nonsense"], id="devices"),
        pytest.param(["rollout", "create", "--model", "m", "--version", "1", "--selector", "a=1,a=2"], id="rollout"),
    ],
)
def test_bad_selector_is_a_usage_error(args: list[str]) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--selector" in result.output


def test_push_of_a_missing_file_names_it(tmp_path: Path) -> None:
    result = runner.invoke(app, ["models", "push", "m", str(tmp_path / "absent.onnx")])
    assert result.exit_code == 1
    assert "absent.onnx: no such file" in result.output


def test_push_refuses_metadata_that_is_not_a_json_object(tmp_path: Path) -> None:
    model = tmp_path / "m.onnx"
    model.write_bytes(b"onnx")
    meta = tmp_path / "meta.json"
    meta.write_text("[1, 2]")
    result = runner.invoke(app, ["models", "push", "m", str(model), "--metadata", str(meta)])
    assert result.exit_code == 1
    assert "expected a JSON object" in result.output


def test_missing_server_config_file_is_named(tmp_path: Path) -> None:
    result = runner.invoke(app, ["server", "--config", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 1
    assert "nope.yaml: no such settings file" in result.output


def test_invalid_server_setting_is_named(tmp_path: Path) -> None:
    config = tmp_path / "cp.yaml"
    config.write_text("mqtt:\n  port: 70000\n")
    result = runner.invoke(app, ["server", "--config", str(config)])
    assert result.exit_code == 1
    assert "mqtt.port" in result.output
