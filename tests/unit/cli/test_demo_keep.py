"""`edgectl demo --keep` / `demo stop` and the demo's output: what a newcomer reads and what `stop` may signal.

`demo stop` is run as a user runs it (CliRunner) against real processes: it stops the demo's own and never
signals a process that pids.json names but that is not the demo's (a stale PID, an edited file).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from control_plane.cli.client import CliError
from control_plane.cli.demo.inference import DeviceCheck
from control_plane.cli.demo.keep import KeptStack, next_steps, read_pids
from control_plane.cli.demo.summary import summary_table
from control_plane.cli.main import app

runner = CliRunner()
ROOT = Path(__file__).resolve().parents[3]


def _device(device_id: str, site: str, provider: str = "CPUExecutionProvider") -> dict[str, object]:
    model = {"name": "demo-classifier", "version": 1, "provider": provider}
    return {"id": device_id, "labels": {"site": site}, "gpu_class": "cpu-x86_64", "reported": {"models": [model]}}


@pytest.mark.parametrize(
    "checks",
    [
        pytest.param({"dev-1": DeviceCheck(True, 0.12), "dev-2": DeviceCheck(True, 1.5)}, id="answers-ok"),
        pytest.param({"dev-1": DeviceCheck(False, 0.1, "max abs diff 0.5 at output y " * 3)}, id="wrong-answer"),
    ],
)
def test_the_summary_table_fits_80_columns(checks: dict[str, DeviceCheck]) -> None:
    devices = [_device("dev-1", "factory-a"), _device("dev-2", "factory-a"), _device("dev-3", "store-b")]
    console = Console(width=300, record=True)  # as wide as it likes: the table itself must stay within 80
    console.print(summary_table(devices, "demo-classifier", checks))
    lines = [line.rstrip() for line in console.export_text().splitlines()]
    assert max(len(line) for line in lines) <= 80, "\n".join(lines)
    assert any("v1 CPU" in line for line in lines)


def test_keep_prints_the_next_commands_with_what_they_need() -> None:
    stack = KeptStack(
        workdir=Path("/tmp/d"),
        api_url="http://127.0.0.1:40001",
        token_file=Path("/tmp/d/control-plane/admin-token"),
        model="demo-classifier",
        version=1,
        serving_url="http://127.0.0.1:40002",
        infer_body={"inputs": [{"name": "x", "shape": [1, 2], "datatype": "FP32", "data": [0.5, 1.0]}]},
    )
    text = "\n".join(next_steps(stack))
    assert "export EDGECTL_URL=http://127.0.0.1:40001" in text
    assert 'export EDGECTL_TOKEN="$(cat /tmp/d/control-plane/admin-token)"' in text
    assert "edgectl devices list" in text
    assert "curl -s http://127.0.0.1:40002/v2/models/demo-classifier/infer" in text
    assert '"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[0.5,1.0]}]' in text
    assert "edgectl demo stop --workdir /tmp/d" in text and "/tmp/d/pids.json" in text


def test_keep_names_edgectl_by_its_path_when_the_virtualenv_is_not_on_path() -> None:
    stack = KeptStack(
        Path("/d"), "http://127.0.0.1:1", Path("/d/t"), "m", 1, None, None, edgectl="/p/.venv/bin/edgectl"
    )
    text = "\n".join(next_steps(stack))
    assert "  /p/.venv/bin/edgectl devices list -o wide" in text
    assert "Stop it: /p/.venv/bin/edgectl demo stop --workdir /d" in text
    assert "curl" not in text  # no device endpoint known: no call to suggest


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def _spawn(started: list[subprocess.Popen[bytes]], *marker: str) -> subprocess.Popen[bytes]:
    """A session leader, as the demo starts its children; `marker` is what its command line names."""
    argv = [sys.executable, "-c", "import time; time.sleep(120)", *marker]
    process = subprocess.Popen(argv, start_new_session=True)
    started.append(process)
    return process


def test_demo_stop_stops_the_demos_processes_and_nothing_else(
    tmp_path: Path, processes: list[subprocess.Popen[bytes]]
) -> None:
    ours = _spawn(processes, "-m", "control_plane.cli.main", "server")
    not_ours = _spawn(processes, "some-other-program")  # e.g. a PID reused since the demo ran
    not_leader = subprocess.Popen(["sleep", "120"])  # in this test's session: not a child the demo started
    processes.append(not_leader)
    pids = {"broker": ours.pid, "dev-1": not_ours.pid, "dev-2": not_leader.pid}
    (tmp_path / "pids.json").write_text(json.dumps(pids))

    result = runner.invoke(app, ["demo", "stop", "--workdir", str(tmp_path)])

    assert result.exit_code == 0, result.output
    assert "stopped broker" in result.stdout
    assert "not the demo's any more): dev-2, dev-1" in result.stdout
    assert ours.wait(timeout=30) == -signal.SIGTERM
    assert not_ours.poll() is None and not_leader.poll() is None


@pytest.mark.parametrize(
    ("content", "message"),
    [
        pytest.param(None, "no demo to stop here", id="missing"),
        pytest.param("not json", "not a pids file", id="not-json"),
        pytest.param('{"init": 1}', "not a pids file", id="pid-1"),
        pytest.param('{"x": "123"}', "not a pids file", id="pid-as-text"),
        pytest.param('{"x": true}', "not a pids file", id="pid-as-bool"),
        pytest.param('{"x": -5}', "not a pids file", id="negative"),
        pytest.param("[1, 2]", "not a pids file", id="a-list"),
        pytest.param(json.dumps({f"p{n}": 1000 + n for n in range(100)}), "not a pids file", id="too-many"),
        pytest.param('{"x": 100}' + " " * 70_000, "not a pids file", id="too-big"),
    ],
)
def test_demo_stop_refuses_a_pids_file_it_did_not_write(tmp_path: Path, content: str | None, message: str) -> None:
    if content is not None:
        (tmp_path / "pids.json").write_text(content)
    with pytest.raises(CliError, match=message):
        read_pids(tmp_path)
    result = runner.invoke(app, ["demo", "stop", "--workdir", str(tmp_path)])
    assert result.exit_code == 1
    assert message in result.output


@pytest.mark.skipif(shutil.which("make") is None, reason="no make on this host")
def test_the_install_step_says_what_it_does_before_each_step(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # Run as its own make, not as a sub-make of `make test` (which would print "Entering directory" lines).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    argv = ["make", "--no-print-directory", "-n", "-B", f"VENV={venv}", f"{venv}/.installed"]
    done = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stdout.splitlines() if not line.startswith("#")]
    steps = [n for n, line in enumerate(lines) if "pip install" in line or "-m venv" in line]
    assert len(steps) >= 4
    for n in steps:
        assert "echo" in lines[n - 1] and str(venv) in lines[n - 1], lines[n - 1 : n + 1]
