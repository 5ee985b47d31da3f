"""The docs a newcomer follows match the code: every exit code `edgectl` can end with is in the README's table, the
README's `rollout.yaml` exists and `edgectl` accepts it, and docs/architecture.md links nothing outside the repo."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.cli.client import CliError, RequestRejected, ServerUnreachable
from control_plane.cli.commands.info import DEGRADED_EXIT
from control_plane.cli.demo.command import EXIT_INTERRUPTED
from control_plane.cli.main import app
from control_plane.cli.parsing import load_rollout_spec
from control_plane.cli.watch_view import WatchExit
from tests.support import free_port

ROOT = Path(__file__).resolve().parents[3]
README = ROOT / "README.md"
runner = CliRunner()


def cli_exit_codes() -> set[int]:
    """Every exit code the CLI defines: its error classes, the watch and demo codes, and click's usage error."""
    errors = {CliError.exit_code, RequestRejected.exit_code, ServerUnreachable.exit_code}
    usage = runner.invoke(app, ["no-such-command"]).exit_code  # what a malformed command line ends with
    return errors | {int(code) for code in WatchExit} | {DEGRADED_EXIT, EXIT_INTERRUPTED, usage}


def test_every_exit_code_of_the_cli_is_in_the_readme_table() -> None:
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", README.read_text(), flags=re.MULTILINE)
    documented = {int(code) for code, _ in rows}
    assert cli_exit_codes() <= documented, sorted(cli_exit_codes() - documented)
    assert {0, 1, 2, 3, 130} <= cli_exit_codes()


def test_the_rollout_yaml_the_readme_names_is_shipped_and_accepted() -> None:
    named = re.findall(r"--spec (\S+\.yaml)", README.read_text())
    assert named, "the README names no rollout spec file"
    for path in named:
        spec = load_rollout_spec(ROOT / path)
        assert spec["strategy"]["type"] == "canary" and spec["gates"]["on_fail"] == "abort"


def test_edgectl_parses_the_shipped_rollout_yaml_before_it_calls_the_server() -> None:
    """Exit 2 (unreachable) rather than 1: the spec passed edgectl's own check before anything was sent."""
    port = free_port()  # reserved: no other test process's server is handed it
    spec = str(ROOT / "examples" / "rollout.yaml")
    result = runner.invoke(app, ["--url", f"http://127.0.0.1:{port}", "rollout", "create", "--spec", spec])
    assert result.exit_code == 2, result.output
    assert "cannot reach the control plane" in result.output


@pytest.mark.parametrize(
    "doc", ["README.md", "docs/architecture.md", "docs/operations.md", "docs/security.md", "docs/api.md"]
)
def test_relative_links_point_at_files_of_the_repository(doc: str) -> None:
    path = ROOT / doc
    for target in re.findall(r"\]\(([^)#\s]+)", path.read_text()):
        if not re.match(r"^[a-z]+://", target):
            assert (path.parent / target).exists(), f"{doc} links {target}, which does not exist"


def test_architecture_links_nothing_outside_the_repository() -> None:
    text = (ROOT / "docs" / "architecture.md").read_text()
    outside = re.findall(r"(?:https?|ftp)://[^\s)>\]]+", text)
    assert [url for url in outside if not re.match(r"https?://(127\.0\.0\.1|localhost)[:/]", url)] == []
