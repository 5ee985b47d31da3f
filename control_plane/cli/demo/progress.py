"""What the person running `edgectl demo` sees while it works: one live status line, one line per finished step.

It only prints; it decides nothing. Steps are `DemoStep` values so a failure can name the step it happened in.
"""

from __future__ import annotations

import time
from enum import Enum
from types import TracebackType

from rich.console import Console
from rich.status import Status


class DemoStep(str, Enum):
    PREPARE = "prepare the workdir"
    BROKER = "start the MQTT broker"
    CONTROL_PLANE = "start the control plane"
    AGENTS = "start the edge agents"
    DEVICES_ONLINE = "wait for the devices"
    TRAIN = "train the demo model"
    BUILD = "build for the fleet's GPU classes"
    ROLLOUT = "roll out"
    VERIFY = "check the devices' answers"


class Reporter:
    def __init__(self, console: Console) -> None:
        self.console = console
        self.step = DemoStep.PREPARE
        self._status: Status | None = None
        self._step_started = time.monotonic()

    def __enter__(self) -> Reporter:
        self._status = self.console.status("starting", spinner="dots")
        self._status.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._status is not None:
            self._status.stop()

    def begin(self, step: DemoStep, text: str) -> None:
        self.step = step
        self._step_started = time.monotonic()
        self.update(text)

    def update(self, text: str) -> None:
        if self._status is not None:
            self._status.update(f"[bold]{text}")

    def done(self, text: str) -> None:
        elapsed = time.monotonic() - self._step_started
        self.console.print(f"[green]✓[/] {text} [dim]({elapsed:.1f}s)[/]", highlight=False)
