"""kubectl habits of `edgectl`, as a user types them (typer's CliRunner, a real bash): `-o json|yaml|wide` after
any command that prints a result, shell completion, "did you mean" for commands and names."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from rich.console import Console
from typer.testing import CliRunner

from control_plane.cli import views
from control_plane.cli.main import NO_RESULT, app
from control_plane.cli.suggestions import did_you_mean, unknown_label_keys

runner = CliRunner()
BIN = Path(sys.executable).parent


def leaf_commands() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []

    def walk(group: Any, path: str) -> None:
        for name, sub in group.commands.items():
            where = f"{path} {name}".strip()
            if hasattr(sub, "commands"):
                walk(sub, where)
            else:
                found.append((where, sub))

    walk(typer.main.get_command(app), "")
    return found


def test_every_command_that_prints_a_result_takes_dash_o_after_it() -> None:
    own_output_file = {"models samples", "artifacts get"}  # their -o is the file they write, as before
    missing = []
    for path, _command in leaf_commands():
        if path in NO_RESULT or path.split()[0] in NO_RESULT or path in own_output_file:
            continue
        result = runner.invoke(app, [*path.split(), "--help"])
        assert result.exit_code == 0, (path, result.output)
        if "--output" not in result.output or "yaml" not in result.output:
            missing.append(path)
    assert missing == []
    assert len(leaf_commands()) > 40


@pytest.mark.parametrize("args", [["-o", "json"], ["--output", "json"]], ids=["short", "long"])
def test_dash_o_json_after_the_command_is_the_global_json(args: list[str]) -> None:
    before = runner.invoke(app, ["--json", "config-help"])
    after = runner.invoke(app, ["config-help", *args])
    assert before.exit_code == after.exit_code == 0, after.output
    assert json.loads(after.stdout) == json.loads(before.stdout)


def test_dash_o_yaml_prints_the_same_data_as_json() -> None:
    as_json = json.loads(runner.invoke(app, ["config-help", "-o", "json"]).stdout)
    result = runner.invoke(app, ["config-help", "-o", "yaml"])
    assert result.exit_code == 0, result.output
    assert yaml.safe_load(result.stdout) == as_json
    assert "setting: mqtt.port" in result.stdout


def test_dash_o_before_the_command_works_too_and_an_unknown_format_names_the_valid_ones() -> None:
    assert yaml.safe_load(runner.invoke(app, ["-o", "yaml", "config-help"]).stdout)
    bad = runner.invoke(app, ["config-help", "-o", "xml"])
    assert bad.exit_code == 2
    assert all(word in bad.output for word in ("xml", "table", "wide", "json", "yaml"))


@pytest.mark.parametrize(
    ("render", "rows", "extra"),
    [
        pytest.param(
            views.devices_view,
            [
                {
                    "id": "dev-1",
                    "presence": "online",
                    "channel": "mqtt",
                    "desired_generation": 7,
                    "hardware": {"arch": "aarch64", "gpu_name": "Orin", "compute_capability": "8.7"},
                }
            ],
            ["channel", "desired gen", "hardware", "mqtt", "aarch64, Orin, 8.7"],
            id="devices",
        ),
        pytest.param(
            views.rollouts_view,
            [
                {
                    "id": "r-1",
                    "model": "m",
                    "version": 2,
                    "phase": "paused",
                    "strategy": "canary",
                    "selector": {"labels": {"site": "a"}},
                    "current_step": "canary",
                    "reason": "gate failed",
                }
            ],
            ["selector", "strategy", "step", "reason", "gate failed", "canary"],
            id="rollouts",
        ),
        pytest.param(
            views.builds_view,
            [
                {
                    "id": "b-1",
                    "model": "m",
                    "version": 3,
                    "target": "jetson-orin",
                    "status": "succeeded",
                    "tensorrt_version": "10.3.0",
                    "builder_id": "gpu-host-1",
                }
            ],
            ["model", "trt", "builder", "10.3.0", "gpu-host-1"],
            id="builds",
        ),
    ],
)
def test_wide_adds_the_columns_the_default_table_leaves_out(render: Any, rows: Any, extra: list[str]) -> None:
    def text(renderable: Any) -> str:
        console = Console(width=400, record=True)
        console.print(renderable)
        return console.export_text()

    narrow, wide = text(render(rows)), text(views.WIDE_VIEWS[render](rows))
    assert [word for word in extra if word in narrow] == []
    assert all(word in wide for word in extra), wide
    first_header = narrow.splitlines()[2].split("┃")[1]
    assert first_header in wide  # the default columns come first, unchanged


@pytest.mark.parametrize("shell", ["bash", "zsh"])
def test_completion_prints_a_script_for_edgectl(shell: str) -> None:
    result = runner.invoke(app, ["completion", shell])
    assert result.exit_code == 0, result.output
    assert "edgectl" in result.stdout and "_EDGECTL_COMPLETE" in result.stdout
    assert f"complete_{shell}" in result.stdout


def test_completion_refuses_a_shell_it_has_no_script_for() -> None:
    result = runner.invoke(app, ["completion", "tcsh"])
    assert result.exit_code == 2
    assert "bash" in result.output and "zsh" in result.output


@pytest.mark.parametrize(
    ("words", "cword", "expected"),
    [
        pytest.param("edgectl dev", 1, {"devices"}, id="command"),
        pytest.param("edgectl devices l", 2, {"list", "labels", "label-keys"}, id="subcommand"),
        pytest.param("edgectl rollout wa", 2, {"watch"}, id="rollout-verb"),
    ],
)
def test_the_completion_variable_answers_a_partial_command(words: str, cword: int, expected: set[str]) -> None:
    env = {"_EDGECTL_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": str(cword)}
    result = runner.invoke(app, [], env=env, prog_name="edgectl")
    assert set(result.stdout.split()) == expected, result.output


@pytest.mark.skipif(shutil.which("bash") is None, reason="no bash on this host")
def test_eval_of_the_bash_script_completes_in_a_real_bash() -> None:
    script = 'eval "$(edgectl completion bash)"; COMP_WORDS=(edgectl rollout pa); COMP_CWORD=2; '
    script += '_edgectl_completion edgectl; echo "${COMPREPLY[@]}"'
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["pause"]


@pytest.mark.parametrize(
    ("args", "suggestion"),
    [
        pytest.param(["devicess"], "'devices'", id="command"),
        pytest.param(["devices", "lst"], "'list'", id="subcommand"),
        pytest.param(["rollout", "abrot", "r-1"], "'abort'", id="verb"),
    ],
)
def test_an_unknown_command_suggests_the_closest(args: list[str], suggestion: str) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "No such command" in result.output and f"Did you mean {suggestion}" in result.output


@pytest.mark.parametrize(
    ("word", "known", "expected"),
    [
        pytest.param("dev-10", ["dev-1", "dev-2", "gw-9"], "; did you mean 'dev-1' or 'dev-2'?", id="close"),
        pytest.param("zzz", ["dev-1"], "", id="nothing-close"),
        pytest.param("x", [], "", id="nothing-known"),
    ],
)
def test_did_you_mean(word: str, known: list[str], expected: str) -> None:
    assert did_you_mean(word, known) == expected


@pytest.mark.parametrize(
    ("wanted", "known", "expected"),
    [
        pytest.param(["sitee"], ["site", "ring"], "no device has label key 'sitee'; did you mean 'site'?", id="typo"),
        pytest.param(["foo"], ["site"], "no device has label key 'foo'; the keys devices carry: site", id="unlike"),
        pytest.param(["foo"], [], "no device has label key 'foo'; no device has labels", id="no-labels"),
        pytest.param(["site"], ["site"], None, id="known"),
    ],
)
def test_unknown_label_keys(wanted: list[str], known: list[str], expected: str | None) -> None:
    assert unknown_label_keys(wanted, known) == expected
