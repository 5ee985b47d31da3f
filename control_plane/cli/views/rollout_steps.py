"""A staged rollout as operators follow it: each step's devices (counted by status, named when few), its bake
countdown, its gate's values against their thresholds and its verdict; and the devices the rollout waits for, with
why. Shared by `rollout show` and `rollout watch`.

Pure renderings of `GET /v1/rollouts/{id}` (docs/api.md): no I/O, no clock. The countdown is measured between the
server's own times (`bake_ends_at` and the answer's `as_of`), never against this machine's clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from rich.console import RenderableType
from rich.text import Text

from control_plane.cli.views.cells import cell, status_text, table

NAMED_UP_TO = 5  # a step with at most this many devices names them (when the page shows them all)
STATUS_ORDER = (
    "activated",
    "in_progress",
    "pending",
    "waiting",
    "failed",
    "timed_out",
    "restoring",
    "restored",
    "restore_failed",
)
READING_LABELS = {
    "failed": "failed",
    "requests": "requests",
    "error_rate": "error rate",
    "p99_ms": "p99 ms",
    "p99_ratio": "p99 ratio",
}


def counts_line(counts: Mapping[str, Any]) -> str:
    """The statuses some device has, in a fixed order: `activated=3 failed=1` (`-` when none)."""
    shown = [f"{s}={counts[s]}" for s in STATUS_ORDER if counts.get(s)]
    shown += [f"{s}={n}" for s, n in counts.items() if n and s not in STATUS_ORDER]
    return " ".join(shown) or "-"


def step_devices(step: Mapping[str, Any], devices: Sequence[Mapping[str, Any]]) -> str:
    """The step's counts, and its devices by name when it has only a few and all of them are on this page."""
    line = counts_line(step.get("counts") or {})
    total = int(step.get("devices") or 0)
    mine = [d for d in devices if d.get("step") == step.get("name")]
    if 0 < total <= NAMED_UP_TO and len(mine) == total:
        line += "\n" + ", ".join(f"{d.get('device_id')} ({d.get('status')})" for d in mine)
    return line


def _time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def bake_text(step: Mapping[str, Any], as_of: Any) -> str:
    """`42 s left` while the step bakes (between the server's times), `-` otherwise."""
    ends, now = _time(step.get("bake_ends_at")), _time(as_of)
    if ends is None:
        return "-"
    if now is None:
        return f"ends {ends.isoformat(timespec='seconds')}"
    left = (ends - now).total_seconds()
    return f"{left:.0f} s left" if left > 0 else "over; judging the gate"


def _number(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else cell(value)


def gate_text(step: Mapping[str, Any]) -> Text:
    """Each gate value against its threshold (the current step), else the thresholds alone."""
    readings = step.get("readings") or []
    out = Text()
    if readings:
        for reading in readings:
            name = READING_LABELS.get(str(reading.get("name")), str(reading.get("name")))
            sign = ">=" if reading.get("bound") == "min" else "<="
            ok = reading.get("ok")
            mark, style = ("ok", "green") if ok else ("not yet", "yellow") if ok is None else ("FAILS", "red")
            if out:
                out.append("\n")
            out.append(f"{name} {_number(reading.get('value'))} (need {sign} {_number(reading.get('threshold'))}) ")
            out.append(mark, style=style)
        return out
    gate = step.get("gate") or {}
    limits = [f"failed <= {gate.get('max_failed', 0)}"]
    if gate.get("min_requests"):
        limits.append(f"requests >= {gate['min_requests']}")
    for key, label in (("max_error_rate", "error rate"), ("max_p99_ms", "p99 ms"), ("max_p99_ratio", "p99 ratio")):
        if gate.get(key) is not None:
            limits.append(f"{label} <= {_number(gate[key])}")
    out.append(", ".join(limits))
    return out


def verdict_text(step: Mapping[str, Any]) -> Text:
    verdict = step.get("verdict")
    if not verdict:
        return Text("-")
    reason = step.get("verdict_reason")
    style = "green" if verdict in ("passed", "overridden") else "red"
    return Text(f"{verdict}" + (f": {reason}" if reason else ""), style=style)


def steps_table(rollout: Mapping[str, Any]) -> RenderableType:
    devices = [d for d in rollout.get("devices") or [] if isinstance(d, Mapping)]
    rows: list[list[RenderableType]] = [
        [
            cell(step.get("name")),
            status_text(step.get("state")),
            step_devices(step, devices),
            bake_text(step, rollout.get("as_of")),
            gate_text(step),
            verdict_text(step),
        ]
        for step in rollout.get("steps") or []
        if isinstance(step, Mapping)
    ]
    return table("steps", ["step", "state", "devices", "bake", "gate (value, threshold)", "verdict"], rows)


def waits_table(rollout: Mapping[str, Any]) -> RenderableType | None:
    """The devices the rollout waits for, with why and until when; None when it waits for none."""
    waits = [w for w in rollout.get("waiting_for") or [] if isinstance(w, Mapping)]
    if not waits:
        return None
    rows: list[list[RenderableType]] = [
        [
            cell(w.get("device_id")),
            cell(w.get("step")),
            status_text(w.get("status")),
            cell(w.get("why")),
            cell(w.get("deadline")),
        ]
        for w in waits
    ]
    in_flight = sum((rollout.get("counts") or {}).get(s, 0) for s in ("in_progress", "restoring"))
    title = "waiting for" + (f" ({len(waits)} of {in_flight} shown)" if in_flight > len(waits) else "")
    return table(title, ["device", "step", "status", "why", "until (then failed)"], rows)
