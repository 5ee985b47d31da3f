"""How a rollout spreads over the fleet and the calendar: which step each device is in, in what order the
steps run, how many devices may be in progress at once, and whether the maintenance window is open.

Pure arithmetic over the spec, the selected devices and a given `now`: no state transitions (rollout_plan.py makes
those), no clock reads. The same spec and devices always give the same split.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime

from control_plane.domain.rollout_spec import WEEKDAYS, MaintenanceWindow, RolloutRequest, StrategyType


def split_steps(
    spec: RolloutRequest, device_ids_sorted: Sequence[str], labels_of: Callable[[str], Mapping[str, str]]
) -> dict[str, str]:
    """Which step each device belongs to. Deterministic: the same spec and devices give the same split."""
    strategy = spec.strategy
    if strategy.type is StrategyType.ALL_AT_ONCE or strategy.canary is None:
        return {d: "all" for d in device_ids_sorted}
    total = len(device_ids_sorted)
    wanted = strategy.canary.labels
    candidates = [d for d in device_ids_sorted if all(labels_of(d).get(k) == v for k, v in wanted.items())]
    if not candidates:
        raise ValueError(f"no selected device has the canary labels {wanted}")
    canary = candidates[: strategy.canary.of(total, minimum=1)]
    out = {d: "canary" for d in canary}
    rest = [d for d in device_ids_sorted if d not in out]
    waves = strategy.waves or ()
    for number, wave in enumerate(waves, start=1):
        size = len(rest) if number == len(waves) else wave.of(total)
        out.update({d: f"wave-{number}" for d in rest[:size]})
        rest = rest[size:]
    out.update({d: f"wave-{len(waves) or 1}" for d in rest})
    return out


def step_order(assignment: Mapping[str, str]) -> tuple[str, ...]:
    def key(step: str) -> tuple[int, int]:
        return (0, 0) if step in ("canary", "all") else (1, int(step.rsplit("-", 1)[1]))

    return tuple(sorted(set(assignment.values()), key=key))


def max_unavailable(spec: RolloutRequest, total: int) -> int:
    """The bound on devices of a rollout in progress at once: as asked; by default all of them for
    all-at-once, else 1 device or 10%, whichever is larger."""
    if spec.max_unavailable is not None:
        return spec.max_unavailable.of(total, minimum=1)
    if spec.strategy.type is StrategyType.ALL_AT_ONCE:
        return max(1, total)
    return max(1, -(-total // 10))


def window_open(window: MaintenanceWindow | None, now: datetime) -> bool:
    if window is None:
        return True
    minute = now.hour * 60 + now.minute
    start, end = window.minutes(window.start), window.minutes(window.end)
    day = WEEKDAYS[now.weekday()]
    if start <= end:
        return day in window.days and start <= minute < end
    # Across midnight: the part after midnight belongs to the window that opened the day before.
    if minute >= start:
        return day in window.days
    return minute < end and WEEKDAYS[(now.weekday() - 1) % 7] in window.days
