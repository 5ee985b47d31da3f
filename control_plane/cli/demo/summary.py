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


MAX_CELL = 16  # longer cells fold, so the table fits an 80-column terminal with the demo's 3 devices
MAX_ANSWER = 11  # "not checked"; a wrong answer's reason folds onto more lines
PROVIDER_SUFFIX = "ExecutionProvider"  # onnxruntime's names: CPUExecutionProvider -> CPU


def summary_table(devices: list[dict[str, Any]], model: str, checks: dict[str, DeviceCheck]) -> Table:
    """Per device: labels, GPU class, what it serves (`v1 CPU`: the version, on onnxruntime's CPU provider),
    p50 latency, answers. Fits 80 columns (tests/unit/cli/test_demo_keep.py)."""
    table = Table(title=f"edge fleet serving {model}", title_justify="left", header_style="bold")
    for column in ("device", "labels", "gpu class", "serving", "p50 ms"):
        table.add_column(column, max_width=MAX_CELL, overflow="fold")
    table.add_column("answers", max_width=MAX_ANSWER, overflow="fold")
    for device in sorted(devices, key=lambda d: str(d.get("id"))):
        status = _model_status(device, model)
        check = checks.get(str(device.get("id")))
        table.add_row(
            cell(device.get("id")),
            cell(device.get("labels")),
            cell(device.get("gpu_class")),
            _serving(status),
            _latency(check),
            _answers(check),
        )
    return table


def _serving(status: dict[str, Any]) -> str:
    if not status:
        return "-"
    return f"v{cell(status.get('version'))} {cell(status.get('provider')).removesuffix(PROVIDER_SUFFIX)}"


def _latency(check: DeviceCheck | None) -> str:
    if check is None or math.isnan(check.p50_ms):
        return "-"
    return f"{check.p50_ms:.2f}"


def _answers(check: DeviceCheck | None) -> Text:
    if check is None:
        return Text("not checked", style="dim")
    return Text("OK", style="green") if check.answers_ok else Text(f"WRONG: {check.problem}", style="red")
