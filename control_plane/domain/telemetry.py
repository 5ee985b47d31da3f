"""Telemetry windows as the planner's gates read them: the new version's traffic since it was published on a
device, and the last window of the version it replaced (the baseline of the relative p99 gate)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from control_plane.domain.rollout_progress import TelemetryWindow

HISTORY_PER_VERSION = 20


@dataclass(frozen=True)
class ModelWindow:
    """One telemetry window the agent reported for one model version."""

    model: str
    version: int
    at: datetime
    window_s: float
    requests: int
    errors: int
    p50_ms: float | None
    p99_ms: float | None


def new_version_window(windows: Iterable[ModelWindow], version: int, since: datetime | None) -> TelemetryWindow | None:
    """Requests and errors of `version` summed over the windows since `since`; the latest p99 reported."""
    mine = sorted((w for w in windows if w.version == version and (since is None or w.at >= since)), key=_at)
    if not mine:
        return None
    p99s = [w.p99_ms for w in mine if w.p99_ms is not None]
    return TelemetryWindow(sum(w.requests for w in mine), sum(w.errors for w in mine), p99s[-1] if p99s else None)


def baseline_window(windows: Iterable[ModelWindow], version: int, before: datetime | None) -> TelemetryWindow | None:
    """The last window with traffic of the replaced `version` before the device switched."""
    old = [w for w in windows if w.version == version and w.requests > 0 and (before is None or w.at <= before)]
    if not old:
        return None
    last = max(old, key=_at)
    return TelemetryWindow(last.requests, last.errors, last.p99_ms)


def _at(window: ModelWindow) -> datetime:
    return window.at
