"""`edgectl demo --keep` and `edgectl demo stop`: the demo's stack left running for a newcomer to try, and stopped.

`next_steps` is pure: the commands to try against the running stack (with the exact URL, token file and serving
URL they need) and how to stop it. `stop_kept` signals only processes that `pids.json` names AND that still look
like the demo's own (a session leader running the control plane, the broker or an agent), so a stale or edited
pids.json can never make it signal an unrelated process. It never deletes the workdir (the logs stay).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from control_plane.cli.client import CliError

MAX_PIDS_FILE = 64 * 1024  # a pids.json is a few lines; anything bigger is not the demo's
MAX_CHILDREN = 64
DEMO_PROGRAMS = ("control_plane", "edge-agent", "edge_agent", "edgectl")  # what a demo child's command line names
STOP_GRACE_S = 10.0


@dataclass(frozen=True)
class KeptStack:
    workdir: Path
    api_url: str
    token_file: Path
    model: str
    version: int
    serving_url: str | None  # one device's KServe v2 endpoint
    infer_body: Mapping[str, Any] | None  # one reference input, as the device expects it
    edgectl: str = "edgectl"  # how this shell runs edgectl: its path when the virtualenv is not on PATH


def next_steps(stack: KeptStack) -> list[str]:
    """What to type next (each line a command or a remark), and how to stop the stack."""
    edgectl = stack.edgectl
    lines = [
        "The demo is still running (--keep). From this shell, try:",
        f"  export EDGECTL_URL={stack.api_url}",
        f'  export EDGECTL_TOKEN="$(cat {stack.token_file})"',
        f"  {edgectl} devices list -o wide",
        f"  {edgectl} rollout list",
        f"  {edgectl} models show {stack.model} --version {stack.version}",
    ]
    if stack.serving_url and stack.infer_body is not None:
        body = json.dumps(stack.infer_body, separators=(",", ":"))
        lines += [
            "Ask a device for an answer (KServe v2; the URL is its reported serving_url, `edgectl devices show`):",
            f"  curl -s {stack.serving_url.rstrip('/')}/v2/models/{stack.model}/infer \\",
            f"    -H 'Content-Type: application/json' -d '{body}'",
        ]
    lines += [
        f"Stop it: {edgectl} demo stop --workdir {stack.workdir}",
        f"  (PIDs in {stack.workdir / 'pids.json'}, logs in {stack.workdir / 'logs'})",
    ]
    return lines


def read_pids(workdir: Path) -> dict[str, int]:
    """`pids.json` as {name: pid}; anything else (too big, not a small object of positive ints) is refused."""
    path = workdir / "pids.json"
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_PIDS_FILE + 1)
    except OSError as exc:
        raise CliError(f"{path}: no demo to stop here ({exc.strerror}); is --workdir the one the demo used?") from exc
    try:
        data = json.loads(raw) if len(raw) <= MAX_PIDS_FILE else None
    except ValueError:
        data = None
    if not isinstance(data, dict) or len(data) > MAX_CHILDREN or not all(_pid(v) for v in data.values()):
        raise CliError(f"{path}: not a pids file written by `edgectl demo` (expected {{name: pid}})")
    return {str(k): int(v) for k, v in data.items()}


def _pid(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 < value < 2**22


def command_line(pid: int) -> str | None:
    """The process's command line (Linux: /proc; elsewhere `ps`), or None when there is no such process."""
    proc = Path(f"/proc/{pid}/cmdline")
    if Path("/proc/self/cmdline").exists():
        try:
            return proc.read_bytes().replace(b"\0", b" ").decode(errors="replace").strip() or None
        except OSError:
            return None
    done = subprocess.run(["ps", "-o", "args=", "-p", str(pid)], capture_output=True, text=True, check=False)
    return (done.stdout.strip() or None) if done.returncode == 0 else None


def is_demo_child(pid: int, args: Callable[[int], str | None] = command_line) -> bool:
    """Still one of the demo's children: its own session leader (the demo starts each in a new session) running
    one of the project's programs. A PID reused by anything else fails one of the two."""
    try:
        if os.getsid(pid) != pid:
            return False
    except (ProcessLookupError, PermissionError):
        return False
    line = args(pid)
    return line is not None and any(program in line for program in DEMO_PROGRAMS)


def stop_kept(workdir: Path, grace_s: float = STOP_GRACE_S) -> tuple[list[str], list[str]]:
    """Stop the kept stack, agents first (reverse start order); returns (stopped, already gone or not ours)."""
    stopped: list[str] = []
    skipped: list[str] = []
    for name, pid in reversed(list(read_pids(workdir).items())):
        if not is_demo_child(pid):
            skipped.append(name)
            continue
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        if not _gone(pid, grace_s):
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        stopped.append(name)
    return stopped, skipped


def _gone(pid: int, grace_s: float) -> bool:
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not running(pid):
            return True
        time.sleep(0.1)  # not our child (the demo that started it has exited): no wait() to block on
    return False


def running(pid: int) -> bool:
    """Alive and not a zombie (an exited process its parent has not reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[:1] != ["Z"]
