"""The rollout executor's thread: run `RolloutService.tick` for the devices that changed (the fleet service says
which, once per batch of messages) and on a timer, so deadlines, bakes and maintenance windows move on even when
no device talks.

It holds only what changed since the last pass, bounded by the fleet (one entry per device: a chatty device counts
once, its latest report handed over by the fleet service wins); the rollouts live in the database, so stopping it (or
killing the process) loses nothing. Its first pass runs every open rollout in full, and so does one pass every
`resync_s` (60 s by default): the safety net of a controller driven by events, as informers' resync period is in
Kubernetes, so that a change whose wake was missed is still seen within a minute.
Once woken it lets `settle_s` (50 ms) pass before the pass, so that the wakes of a burst of batches make one pass
over many devices rather than many passes over few (each pass is one transaction): at 1,000 devices this took the
control plane from 2.4 to 1.7 ms of CPU per device per rollout (docs/benchmarks.md). Tests that want virtual time
skip the thread and call `RolloutService.tick(now)` or `run_once()`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping

from control_plane.domain.ingest import DeviceChange, as_changes
from control_plane.services.rollouts import RolloutService

log = logging.getLogger(__name__)


class RolloutExecutor:
    def __init__(
        self,
        rollouts: RolloutService,
        interval_s: float = 1.0,
        settle_s: float = 0.05,
        resync_s: float = 60.0,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._rollouts = rollouts
        self._interval_s = interval_s
        self._settle_s = settle_s
        self._resync_s = resync_s
        self._monotonic = monotonic
        self._last_full = monotonic()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._pending: dict[str, DeviceChange] = {}
        self._everything = True  # the first pass looks at every open rollout and device
        self._pending_lock = threading.Lock()
        self._republish = threading.Event()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="rollout-executor", daemon=True)
        self._thread.start()

    def wake(self, changes: Collection[str] | Mapping[str, DeviceChange] = ()) -> None:
        """Run a pass soon for these devices (what changed of each, as the fleet service hands it over; bare ids:
        read their reports again); nothing: run every open rollout in full (a push ended). Cheap, callable from
        any thread."""
        with self._pending_lock:
            if changes:
                pending = self._pending
                for device_id, change in as_changes(changes).items():
                    before = pending.get(device_id)
                    pending[device_id] = change if before is None else before.then(change)
            else:
                self._everything = True
        self._wake.set()

    def republish_soon(self) -> None:
        """Publish every device's stored desired state again, on this thread before its next pass (the broker link
        came up: a broker that lost its retained messages gets them back). Callable from any thread; paho's
        network thread returns at once instead of reading the fleet."""
        self._republish.set()
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def take(self) -> dict[str, DeviceChange] | None:
        """What changed since the last pass (None: run everything, asked for or due to resync), and forget it."""
        now = self._monotonic()
        with self._pending_lock:
            full = self._everything or now - self._last_full >= self._resync_s
            changed: dict[str, DeviceChange] | None = None if full else self._pending
            self._pending = {}
            self._everything = False
            if full:
                self._last_full = now
        return changed

    def run_once(self) -> None:
        """One turn of the thread: the republish asked for, if any, then a pass over what changed."""
        if self._republish.is_set():
            self._republish.clear()
            try:
                count = self._rollouts.republish_all()
                log.info("republished the desired states of %d device(s) after the broker link came up", count)
            except Exception:
                log.exception("republishing the desired states failed; they go out again on the next reconnect")
        changed = self.take()
        try:
            self._rollouts.tick(changed=changed)
        except Exception:
            log.exception("the rollout executor's pass failed; it runs again on the next tick")

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._interval_s)
            self._stop.wait(self._settle_s)  # let a burst of wakes gather: one pass for many devices
            self._wake.clear()
            if self._stop.is_set():
                return
            self.run_once()
