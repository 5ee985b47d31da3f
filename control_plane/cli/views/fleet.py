"""Views of the fleet and its rollouts: devices (what each serves, why it fell back, their tunnel, their latest
telemetry), their events, rollouts (steps, gates and waits: rollout_steps.py) and their per-device progress.

Pure functions from JSON data (docs/api.md) to renderables: no I/O, no client calls.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from control_plane.cli.views.cells import cell, record, status_text, table
from control_plane.cli.views.link_health import tunnel_view
from control_plane.cli.views.rollout_steps import steps_table, waits_table


def _serving(device: dict[str, Any]) -> str:
    models = (device.get("reported") or {}).get("models") or []
    return (
        ", ".join(
            f"{m.get('name')} v{m.get('version')} {m.get('artifact_kind') or 'onnx'} ({m.get('provider')})"
            for m in models
        )
        or "-"
    )


def _fallbacks(device: dict[str, Any]) -> str | None:
    models = (device.get("reported") or {}).get("models") or []
    reasons = [f"{m.get('name')}: {m['fallback_reason']}" for m in models if m.get("fallback_reason")]
    return "; ".join(reasons) or None


def devices_view(data: Any, first: bool = True) -> RenderableType:
    """A table of devices; a later page of a paged list (`first` False) has neither title nor header."""
    rows: list[list[RenderableType]] = [
        [
            cell(d.get("id")),
            status_text(d.get("presence")),
            cell(d.get("gpu_class")),
            cell(d.get("labels")),
            _serving(d),
            cell(d.get("last_seen")),
        ]
        for d in data
    ]
    shown = table("devices" if first else "", ["id", "presence", "gpu class", "labels", "serving", "last seen"], rows)
    shown.show_header = first
    return shown


def device_view(data: Any) -> RenderableType:
    main = record(
        f"device {data.get('id')}",
        {**data, "serving": _serving(data), "fell back": _fallbacks(data)},
        ["id", "presence", "last_seen", "channel", "gpu_class", "labels", "serving", "fell back", "desired_generation"],
    )
    parts: list[RenderableType] = [main, record("hardware", data.get("hardware") or {})]
    if data.get("ansible"):
        parts.append(record("ansible connection", data["ansible"]))
    if data.get("delivery_failure"):
        parts.append(record("last failed delivery", data["delivery_failure"]))
    reported = data.get("reported")
    if reported:
        shown = {k: v for k, v in reported.items() if k not in ("hardware", "models", "tunnel")}
        parts.append(record("reported", shown))
    tunnel = tunnel_view(data)
    if tunnel is not None:
        parts.append(tunnel)
    parts.append(telemetry_view(data.get("telemetry") or []))
    return Group(*parts)


TELEMETRY_SHOWN = 10


def telemetry_view(windows: list[Any]) -> RenderableType:
    """The device's latest telemetry windows (what its agent reports per model version), newest first."""
    if not windows:
        return Text("telemetry: none reported yet", style="dim")
    rows: list[list[RenderableType]] = [
        [
            cell(w.get("at")),
            f"{w.get('model')} v{w.get('version')}",
            cell(w.get("window_s")),
            cell(w.get("requests")),
            cell(w.get("errors")),
            _ms(w.get("p50_ms")),
            _ms(w.get("p99_ms")),
        ]
        for w in windows[:TELEMETRY_SHOWN]
    ]
    columns = ["at", "model", "window s", "requests", "errors", "p50 ms", "p99 ms"]
    return table("telemetry (newest first)", columns, rows)


def _ms(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, (int, float)) else "-"


def events_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(e.get("at")),
            cell(e.get("source")),
            cell(e.get("generation")),
            status_text(e.get("step")),
            cell(e.get("model")),
            cell(e.get("version")),
            cell(e.get("reason")),
        ]
        for e in data
    ]
    columns = ["at", "from", "generation", "step", "model", "version", "reason"]
    return table("events (newest first)", columns, rows)


def rollouts_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [
        [
            cell(r.get("id")),
            cell(r.get("model")),
            cell(r.get("version")),
            status_text(r.get("phase")),
            counts_text(r.get("counts") or {}),
            cell(r.get("created_at")),
        ]
        for r in data
    ]
    return table("rollouts", ["id", "model", "version", "phase", "devices", "created"], rows)


def counts_text(counts: dict[str, Any]) -> str:
    """The usual four always, then any other status some device has (timed out, restoring, restored, ...)."""
    order = ("activated", "in_progress", "pending", "failed")
    rest = [f"{k}={n}" for k, n in counts.items() if n and k not in order and k != "waiting"]
    return " ".join([*(f"{k}={counts.get(k, 0)}" for k in order), *rest])


def rollout_view(data: Any) -> RenderableType:
    head = record(
        f"rollout {data.get('id')}",
        {**data, "counts": counts_text(data.get("counts") or {})},
        ["id", "model", "version", "selector", "strategy", "phase", "counts", "created_at", "updated_at"],
    )
    rows: list[list[RenderableType]] = [
        [
            cell(d.get("device_id")),
            cell(d.get("target")),
            status_text(d.get("status")),
            cell(d.get("generation")),
            cell(d.get("reason")),
            cell(d.get("updated_at")),
        ]
        for d in data.get("devices") or []
    ]
    devices = table("devices", ["device", "target", "status", "generation", "reason", "updated"], rows)
    parts: list[RenderableType] = [head]
    if data.get("reason"):
        parts.append(Text(f"reason: {data['reason']}"))
    parts.append(steps_table(data))
    waits = waits_table(data)
    if waits is not None:
        parts.append(waits)
    parts.append(devices)
    total = sum((data.get("counts") or {}).values())
    cursor = data.get("next_cursor")
    if cursor:
        command = f"edgectl rollout show {data.get('id')} --cursor {cursor}"
        parts.append(Text(f"showing {len(rows)} of {total} devices; the next page: {command}", style="dim"))
    return Group(*parts)


def label_keys_view(data: Any) -> RenderableType:
    rows: list[list[RenderableType]] = [[cell(k.get("key")), cell(k.get("devices"))] for k in data]
    return table("label keys", ["key", "devices"], rows)
