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

import pytest

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


def test_demo_trains_builds_rolls_out_and_serves(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    result = subprocess.run(
        [EDGECTL, "demo", "--workdir", str(workdir)],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=240,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for device, site in (("dev-1", "factory-a"), ("dev-2", "factory-a"), ("dev-3", "store-b")):
        row = re.search(rf"│ {device}\s+│ site={site}\s+│[^\n]*", out)
        assert row is not None, out
        cells = [c.strip() for c in row.group(0).split("│")[1:-1]]
        assert cells[3] == "1", cells  # version
        assert cells[-1] == "OK", cells  # answers match the reference outputs
        assert float(cells[-2]) > 0  # p50 latency in ms
    assert re.search(r"demo finished in \d+\.\ds", out)

    pids = recorded_pids(workdir)
    assert set(pids) == EXPECTED_CHILDREN
    assert [name for name, pid in pids.items() if alive(pid)] == []


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
