"""`edgectl demo`, the product's main path, as a user runs it: a subprocess that must succeed and clean up.

Every process it started (recorded in WORKDIR/pids.json) must be gone afterwards, on success and on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from control_plane.cli.demo.keep import running
from tests.support import python_env, wait_for

pytestmark = pytest.mark.integration

EDGECTL = str(Path(sys.executable).parent / "edgectl")
EXPECTED_CHILDREN = {"broker", "control-plane", "dev-1", "dev-2", "dev-3"}


def recorded_pids(workdir: Path) -> dict[str, int]:
    try:
        data = json.loads((workdir / "pids.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): int(v) for k, v in data.items()}


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_trains_builds_rolls_out_serves_and_keep_leaves_a_stack_to_try(tmp_path: Path) -> None:
    """One run for the main path and `--keep`: the summary, then the printed next commands work against the stack
    that is still running, and `edgectl demo stop` ends every process the demo started. (Without --keep the same
    `Supervisor.stop_all` runs as on Ctrl-C: the next test.)"""
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [EDGECTL, "demo", "--workdir", str(workdir), "--keep"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=240,
        cwd=tmp_path,
    )
    try:
        assert result.returncode == 0, result.stdout + result.stderr
        out = result.stdout
        for device, site in (("dev-1", "factory-a"), ("dev-2", "factory-a"), ("dev-3", "store-b")):
            row = re.search(rf"│ {device}\s+│ site={site}\s+│[^\n]*", out)
            assert row is not None, out
            cells = [c.strip() for c in row.group(0).split("│")[1:-1]]
            assert cells[3] == "v1 CPU", cells  # the version it serves, on onnxruntime's CPU provider
            assert cells[-1] == "OK", cells  # answers match the reference outputs
            assert float(cells[-2]) > 0  # p50 latency in ms
        table = [line for line in out.splitlines() if line and line[0] in "┏┃┡│└"]
        assert len(table) >= 7 and max(len(line) for line in table) <= 80, "\n".join(table)
        assert re.search(r"demo finished in \d+\.\ds", out)

        pids = recorded_pids(workdir)
        assert set(pids) == EXPECTED_CHILDREN
        assert [name for name, pid in pids.items() if not running(pid)] == []
        _try_the_printed_commands(out)
    finally:
        stop = subprocess.run(
            [EDGECTL, "demo", "stop", "--workdir", str(workdir)], capture_output=True, text=True, timeout=120
        )
    assert stop.returncode == 0, stop.stdout + stop.stderr
    assert "stopped" in stop.stdout
    wait_for(
        lambda: [name for name, pid in recorded_pids(workdir).items() if running(pid)] == [],
        timeout=30,
        what="every process of the demo to be gone",
    )


def _try_the_printed_commands(out: str) -> None:
    """What --keep prints is enough to use the stack: the exports for edgectl and the curl call to a device."""
    url = re.search(r"export EDGECTL_URL=(\S+)", out)
    token_file = re.search(r'export EDGECTL_TOKEN="\$\(cat (\S+)\)"', out)
    assert url is not None and token_file is not None, out
    env = python_env() | {"EDGECTL_URL": url.group(1), "EDGECTL_TOKEN": Path(token_file.group(1)).read_text().strip()}
    listed = subprocess.run([EDGECTL, "devices", "list", "-o", "json"], capture_output=True, text=True, env=env)
    assert listed.returncode == 0, listed.stderr
    assert sorted(d["id"] for d in json.loads(listed.stdout)) == sorted(EXPECTED_CHILDREN - {"broker", "control-plane"})
    assert "edgectl demo stop --workdir" in out

    curl = re.search(r"curl -s (\S+) \\\n\s+-H 'Content-Type: application/json' -d '(.+)'", out)
    assert curl is not None, out
    answer = httpx.post(curl.group(1), json=json.loads(curl.group(2)), timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"], answer.text


def test_ctrl_c_stops_every_child_and_exits_non_zero(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    log = (tmp_path / "demo.out").open("w+")
    demo = subprocess.Popen(
        [EDGECTL, "demo", "--workdir", str(workdir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=python_env(),
        cwd=tmp_path,
    )
    try:
        wait_for(
            lambda: {"broker", "control-plane"} <= set(recorded_pids(workdir)),
            timeout=60,
            what="the demo to start the broker and the control plane",
        )
        wait_for(
            lambda: "control plane on" in (tmp_path / "demo.out").read_text(),
            timeout=60,
            what="the control plane to be up",
        )
        demo.send_signal(signal.SIGINT)
        code = demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        log.close()
    output = (tmp_path / "demo.out").read_text()
    assert code != 0, output
    assert "interrupted" in output
    pids = recorded_pids(workdir)
    assert {"broker", "control-plane"} <= set(pids)
    assert [name for name, pid in pids.items() if alive(pid)] == []
