"""The demo's child processes: start them with their output in a log file, record their PIDs, stop them all.

Each child runs in its own session (process group) so a terminal's Ctrl-C reaches only the demo, which then stops
the children in order. Stopping is SIGTERM, then SIGKILL to the child's group after a grace period; only PIDs
this supervisor started are ever signalled. `pids.json` in the workdir lists them for whoever checks afterwards.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

STOP_GRACE_S = 10.0
LOG_TAIL_LINES = 30


class ChildDied(Exception):
    """A child exited while the demo still needed it."""

    def __init__(self, child: Child) -> None:
        super().__init__(f"{child.name} exited unexpectedly with code {child.popen.returncode}")
        self.child = child


@dataclass
class Child:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


class Interrupted(Exception):
    """SIGINT or SIGTERM arrived while the demo ran."""


class InterruptGate:
    """Turns SIGINT/SIGTERM into `Interrupted`, but holds it back inside `critical()` sections.

    Signals are deferred rather than blocked: a blocked mask would be inherited by the children we start,
    and they would then ignore our SIGTERM.
    """

    def __init__(self) -> None:
        self._critical = False
        self._pending: str | None = None
        self._previous: dict[signal.Signals, Any] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self._critical:
            self._pending = name
            return
        raise Interrupted(name)

    def install(self) -> None:
        self._previous = {s: signal.signal(s, self._handle) for s in (signal.SIGINT, signal.SIGTERM)}

    def ignore(self) -> None:
        """During cleanup: further interrupts are ignored so stopping the children is never cut short."""
        for signum in self._previous:
            signal.signal(signum, signal.SIG_IGN)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    @contextmanager
    def critical(self) -> Iterator[None]:
        self._critical = True
        try:
            yield
        finally:
            self._critical = False
        if self._pending is not None:
            raise Interrupted(self._pending)


@dataclass
class Supervisor:
    workdir: Path
    env: dict[str, str]
    gate: InterruptGate = field(default_factory=InterruptGate)
    children: list[Child] = field(default_factory=list)

    @property
    def pids_file(self) -> Path:
        return self.workdir / "pids.json"

    def start(self, name: str, argv: Sequence[str]) -> Child:
        log_path = self.workdir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("ab") as log, self.gate.critical():
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=self.env,
                start_new_session=True,
            )
            child = Child(name, popen, log_path)
            self.children.append(child)
            self._record()
        return child

    def get(self, name: str) -> Child | None:
        return next((c for c in self.children if c.name == name), None)

    def check_alive(self) -> None:
        for child in self.children:
            if not child.alive():
                raise ChildDied(child)

    def stop_all(self, grace_s: float = STOP_GRACE_S) -> None:
        """Stop children one by one in reverse start order (agents, control plane, broker), so each can still
        say goodbye over the broker; SIGKILL what does not stop within `grace_s`."""
        for child in reversed(self.children):
            _signal(child.pid, signal.SIGTERM)
            try:
                child.popen.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(child.pid, signal.SIGKILL)
                child.popen.wait(timeout=grace_s)
            # whatever the child itself started (e.g. a training subprocess) goes with it
            _signal_group(child.pid, signal.SIGKILL)

    def _record(self) -> None:
        data = {c.name: c.pid for c in self.children}
        tmp = self.pids_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.pids_file)


def _signal(pid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signum)


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)
