"""The rollout executor's thread: run `RolloutService.tick` when a device reports (or sends telemetry) and on a
timer, so deadlines, bakes and maintenance windows move on even when no device talks.

It holds no state of its own; everything is in the database, so stopping it (or killing the process) loses
nothing. Tests that want virtual time skip the thread and call `RolloutService.tick(now)` themselves.
"""

from __future__ import annotations

import logging
import threading

from control_plane.services.rollouts import RolloutService

log = logging.getLogger(__name__)


class RolloutExecutor:
    def __init__(self, rollouts: RolloutService, interval_s: float = 1.0) -> None:
        self._rollouts = rollouts
        self._interval_s = interval_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rollout-executor", daemon=True)
        self._thread.start()

    def wake(self, _device_id: str | None = None) -> None:
        """Run a pass soon (a device reported); cheap, callable from any thread."""
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._rollouts.tick()
            except Exception:
                log.exception("the rollout executor's pass failed; it runs again on the next tick")
