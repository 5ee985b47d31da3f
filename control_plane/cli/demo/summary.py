"""The demo's closing table: per device, what it runs and how it answered. Pure rendering from collected data."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table
from rich.text import Text

from control_plane.cli.demo.inference import DeviceCheck
from control_plane.cli.views import cell


def _model_status(device: dict[str, Any], model: str) -> dict[str, Any]:
    models = (device.get("reported") or {}).get("models") or []
    return next((m for m in models if m.get("name") == model), {})


def summary_table(devices: list[dict[str, Any]], model: str, checks: dict[str, DeviceCheck]) -> Table:
    table = Table(title=f"edge fleet serving {model}", title_justify="left", header_style="bold")
    for column in ("device", "labels", "gpu class", "version", "provider", "p50 latency ms", "answers"):
        table.add_column(column)
    for device in sorted(devices, key=lambda d: str(d.get("id"))):
        status = _model_status(device, model)
        check = checks.get(str(device.get("id")))
        table.add_row(
            cell(device.get("id")),
            cell(device.get("labels")),
            cell(device.get("gpu_class")),
            cell(status.get("version")),
            cell(status.get("provider")),
            _latency(check),
            _answers(check),
        )
    return table


def _latency(check: DeviceCheck | None) -> str:
    if check is None or math.isnan(check.p50_ms):
        return "-"
    return f"{check.p50_ms:.2f}"


def _answers(check: DeviceCheck | None) -> Text:
    if check is None:
        return Text("not checked", style="dim")
    return Text("OK", style="green") if check.answers_ok else Text(f"WRONG: {check.problem}", style="red")
