"""What the rollout service remembers between passes, and what its readers see.

`RolloutMemory` holds the open rollouts, which one holds each device, and the device views read so far: what lets a
pass cost what changed. It is rebuilt from the database when the service starts and changed only under the
service's lock, which a pass holds from its first read to its last publish (at 10,000 devices, seconds).

`Shown` is what readers get instead: after every decision the service shows each open rollout's state and a copy
of its views, under a lock of its own held only for that exchange, so that `GET /v1/rollouts/{id}` (its waits and
gate values) and the `/metrics` scrape never wait for a pass. Before, they took the service's lock, and their p99
during a 10,000-device abort was the pass's length (3.7 s). Nothing here reads the database or decides anything.
"""

from __future__ import annotations

import threading
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from control_plane.domain.ingest import DeviceChange
from control_plane.domain.rollout_plan import next_attention
from control_plane.domain.rollout_progress import DeviceView, RolloutState


class RolloutMemory:
    """The open rollouts, which one holds each device, and the device views read so far: what lets a pass cost
    what changed. Rebuilt from the database when the service starts; changed only under the service's lock."""

    def __init__(self, open_rollouts: Sequence[RolloutState]) -> None:
        self.open: dict[str, RolloutState] = {}
        self.owner: dict[str, str] = {}
        self.views: dict[str, dict[str, DeviceView]] = {}
        self._complete: dict[str, str] = {}  # rollout -> the step whose every device has a view
        for state in open_rollouts:
            self.remember(state)

    def remember(self, state: RolloutState) -> None:
        if state.phase.final:
            if self.open.pop(state.id, None) is not None:
                for track in state.devices:
                    if self.owner.get(track.device_id) == state.id:
                        del self.owner[track.device_id]
            self.views.pop(state.id, None)
            self._complete.pop(state.id, None)
            return
        if state.id not in self.open:
            self.owner.update((t.device_id, state.id) for t in state.devices)
        self.open[state.id] = state

    def holders(self, device_ids: Collection[str]) -> dict[str, set[str]]:
        """The open rollouts holding any of these devices, with which."""
        out: dict[str, set[str]] = {}
        for device_id in device_ids:
            if (rollout_id := self.owner.get(device_id)) is not None:
                out.setdefault(rollout_id, set()).add(device_id)
        return out

    def due(
        self, changes: Mapping[str, DeviceChange] | None, now: datetime
    ) -> dict[str, dict[str, DeviceChange] | None]:
        """The rollouts a pass runs, each with its changed devices (None: all of them). New telemetry alone wakes
        only a rollout whose gates watch it."""
        if changes is None:
            return dict.fromkeys(self.open)
        out: dict[str, dict[str, DeviceChange] | None] = {}
        for device_id, change in changes.items():
            rollout_id = self.owner.get(device_id)
            if rollout_id is None or (change.telemetry_only and not self.open[rollout_id].spec.watches_telemetry):
                continue
            mine = out.setdefault(rollout_id, {})
            assert mine is not None
            mine[device_id] = change
        for rollout_id, state in self.open.items():
            at = next_attention(state)
            if rollout_id not in out and at is not None and at <= now:
                out[rollout_id] = {}
        return out

    def missing_of_step(self, state: RolloutState) -> set[str]:
        """The current step's devices without a view yet; walked once per step (then remembered complete)."""
        step = state.current_step
        if step is None or state.step_started_at is None or self._complete.get(state.id) == step:
            return set()
        known = self.views.get(state.id, {})
        self._complete[state.id] = step
        return {t.device_id for t in state.devices if t.step == step and t.device_id not in known}


class Shown:
    """Each open rollout's state and views as of the service's last decision about it; read without waiting."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._shown: dict[str, tuple[RolloutState, Mapping[str, DeviceView]]] = {}

    def show(self, memory: RolloutMemory, rollout_id: str) -> None:
        """Called under the service's lock after a decision: the rollout as the memory now holds it (gone once
        final). The views are copied, so the next pass can change its own."""
        state = memory.open.get(rollout_id)
        views = dict(memory.views.get(rollout_id, {})) if state is not None else {}
        with self._lock:
            if state is None:
                self._shown.pop(rollout_id, None)
            else:
                self._shown[rollout_id] = (state, views)

    def get(self, rollout_id: str) -> tuple[RolloutState, Mapping[str, DeviceView]] | None:
        with self._lock:
            return self._shown.get(rollout_id)

    def all(self) -> list[tuple[RolloutState, Mapping[str, DeviceView]]]:
        with self._lock:
            return list(self._shown.values())
