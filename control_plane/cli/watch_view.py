"""What `edgectl rollout watch` shows: a rollout's phase, its steps (devices by status, bake countdown, gate values
against thresholds, verdicts), what it waits for and per-device progress, kept up to date from its event stream
(SSE records) and from `GET /v1/rollouts/{id}`.

Pure: it folds event and rollout JSON into a `WatchModel` and renders it with rich; it never does I/O, so the
rendering is tested from recorded data. Unknown keys and kinds are ignored (the stream may grow new kinds).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from control_plane.cli.views import status_text
from control_plane.cli.views.rollout_steps import steps_table, waits_table


class WatchExit(int, Enum):
    """Exit codes of `edgectl rollout watch`."""

    SUCCEEDED = 0
    FAILED = 1  # aborted or rolled back (or the rollout cannot be watched)
    TIMED_OUT = 3


FINAL_EXITS: Mapping[str, WatchExit] = {
    "succeeded": WatchExit.SUCCEEDED,
    "aborted": WatchExit.FAILED,
    "rolled_back": WatchExit.FAILED,
}


@dataclass
class DeviceRow:
    step: str = ""
    status: str = ""
    reason: str = ""


@dataclass
class WatchModel:
    rollout_id: str
    phase: str = "unknown"
    step: str | None = None
    reason: str | None = None
    title: str = ""
    gates: dict[str, str] = field(default_factory=dict)  # step -> verdict text
    devices: dict[str, DeviceRow] = field(default_factory=dict)
    last_event_id: int = 0
    last_message: str | None = None
    rollout: dict[str, Any] = field(default_factory=dict)  # the latest full answer: steps, waits, as_of

    @property
    def final(self) -> bool:
        return self.phase in FINAL_EXITS

    def exit_code(self) -> WatchExit:
        return FINAL_EXITS.get(self.phase, WatchExit.FAILED)


def apply_event(model: WatchModel, event: Mapping[str, Any]) -> None:
    """Fold one event record (the SSE `data:` JSON) into the model."""
    kind, data = str(event.get("kind", "")), event.get("data") or {}
    model.last_event_id = max(model.last_event_id, int(event.get("id") or 0))
    model.last_message = str(event.get("message") or "") or model.last_message
    step = event.get("step")
    if kind == "step_started" and step:
        model.step = str(step)
    elif kind in ("gate_passed", "gate_failed") and step:
        verdict = "passed" if kind == "gate_passed" else "failed"
        model.gates[str(step)] = f"{verdict}: {event.get('message') or ''}".rstrip(": ")
    elif kind == "phase" and data.get("phase"):
        model.phase = str(data["phase"])
        model.reason = str(event.get("message") or "") or model.reason
    elif kind in ("paused", "aborting", "rolling_back"):
        model.reason = str(event.get("message") or "") or model.reason
    device_id = event.get("device_id")
    if device_id:
        _device_event(model, str(device_id), event, data)


def _device_event(model: WatchModel, device_id: str, event: Mapping[str, Any], data: Mapping[str, Any]) -> None:
    row = model.devices.setdefault(device_id, DeviceRow())
    if event.get("step"):
        row.step = str(event["step"])
    if data.get("status"):
        row.status = str(data["status"])
    elif event.get("kind") in ("published", "restored"):
        row.status = "restored" if event.get("kind") == "restored" else "in_progress"
    reason = data.get("reason") or event.get("message")
    if reason:
        row.reason = str(reason)


def apply_rollout(model: WatchModel, rollout: Mapping[str, Any]) -> None:
    """Take the full picture from `GET /v1/rollouts/{id}` (it wins over what the events said)."""
    model.rollout = dict(rollout)
    model.phase = str(rollout.get("phase") or model.phase)
    model.reason = rollout.get("reason") or model.reason
    current = rollout.get("current_step") or rollout.get("step")
    if isinstance(current, Mapping):
        current = current.get("name")
    model.step = str(current) if current else model.step
    model.title = f"{rollout.get('model', '?')} v{rollout.get('version', '?')}"
    for step in rollout.get("steps") or []:
        if isinstance(step, Mapping):
            _step_gate(model, step)
    for device in rollout.get("devices") or []:
        if isinstance(device, Mapping) and device.get("device_id"):
            row = model.devices.setdefault(str(device["device_id"]), DeviceRow())
            row.step = str(device.get("step") or row.step)
            row.status = str(device.get("status") or row.status)
            row.reason = str(device.get("reason") or row.reason or "")


def _step_gate(model: WatchModel, step: Mapping[str, Any]) -> None:
    name = step.get("name")
    gate = step.get("gate") or step.get("verdict") or step.get("gates")
    if isinstance(gate, Mapping):
        gate = " ".join(str(gate[k]) for k in ("verdict", "reason") if gate.get(k))
    if name and gate:
        model.gates[str(name)] = str(gate)


def render(model: WatchModel) -> RenderableType:
    """Header (rollout, phase, current step, reason, gate verdicts) above a table of the devices."""
    header = Text()
    header.append(f"rollout {model.rollout_id}", style="bold")
    if model.title:
        header.append(f"  {model.title}")
    header.append("  phase ")
    header.append_text(status_text(model.phase))
    if model.step:
        header.append(f"  step {model.step}")
    if model.reason:
        header.append(f"\nreason: {model.reason}")
    for step, verdict in model.gates.items():
        header.append(f"\ngate {step}: ")
        header.append(verdict, style="green" if verdict.startswith("passed") else "red")
    devices = Table(title="devices", title_justify="left", expand=False)
    for column in ("step", "device", "status", "reason"):
        devices.add_column(column)
    for device_id, row in sorted(model.devices.items(), key=lambda item: (item[1].step, item[0])):
        devices.add_row(row.step, device_id, status_text(row.status or "-"), row.reason)
    parts: list[RenderableType] = [header]
    if model.rollout.get("steps"):
        parts.append(steps_table(model.rollout))
    waits = waits_table(model.rollout)
    if waits is not None:
        parts.append(waits)
    return Group(*parts, devices)


def final_line(model: WatchModel) -> str:
    reason = f": {model.reason}" if model.reason else ""
    return f"rollout {model.rollout_id} {model.phase}{reason}"
