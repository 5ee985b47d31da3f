"""`-o wide`: each list table with the columns its default leaves out, as `kubectl get -o wide` adds node and IP.

A wide view is the default view's table with more columns appended, so the two never disagree on the columns they
share. `WIDE_VIEWS` maps a default view to its wide one; `Output` looks it up, commands never choose. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.console import RenderableType
from rich.table import Table

from control_plane.cli.views.builds import builds_view
from control_plane.cli.views.cells import cell
from control_plane.cli.views.fleet import devices_view, rollouts_view

Column = tuple[str, Callable[[dict[str, Any]], RenderableType]]


def widened(base: RenderableType, items: Sequence[Any], extra: Sequence[Column]) -> RenderableType:
    """`base` (a table with one row per item) with the `extra` columns appended; anything else is left as is."""
    if not isinstance(base, Table) or base.row_count != len(items):
        return base
    out = Table(title=base.title, title_justify="left", header_style="bold", show_header=base.show_header)
    for column in base.columns:
        out.add_column(column.header, overflow="fold")
    for header, _ in extra:
        out.add_column(header, overflow="fold")
    cells = [list(column.cells) for column in base.columns]
    for index, item in enumerate(items):
        row = [column[index] for column in cells]
        out.add_row(*row, *(value(item if isinstance(item, dict) else {}) for _, value in extra))
    return out


def _hardware(device: dict[str, Any]) -> str:
    hardware = device.get("hardware") or {}
    parts = [hardware.get("arch"), hardware.get("gpu_name"), hardware.get("compute_capability")]
    return cell([p for p in parts if p])


def _fell_back(device: dict[str, Any]) -> str:
    models = (device.get("reported") or {}).get("models") or []
    return cell([f"{m.get('name')}: {m['fallback_reason']}" for m in models if m.get("fallback_reason")])


DEVICE_COLUMNS: Sequence[Column] = (
    ("channel", lambda d: cell(d.get("channel"))),
    ("desired gen", lambda d: cell(d.get("desired_generation"))),
    ("hardware", _hardware),
    ("fell back", _fell_back),
)

ROLLOUT_COLUMNS: Sequence[Column] = (
    ("selector", lambda r: cell(r.get("selector"))),
    ("strategy", lambda r: cell(r.get("strategy"))),
    ("step", lambda r: cell(r.get("current_step"))),
    ("reason", lambda r: cell(r.get("reason"))),
    ("updated", lambda r: cell(r.get("updated_at"))),
)

BUILD_COLUMNS: Sequence[Column] = (
    ("model", lambda b: cell(b.get("model"))),
    ("version", lambda b: cell(b.get("version"))),
    ("trt", lambda b: cell(b.get("tensorrt_version"))),
    ("builder", lambda b: cell(b.get("builder_id"))),
    ("created", lambda b: cell(b.get("created_at"))),
)


def devices_wide_view(data: Any, first: bool = True) -> RenderableType:
    return widened(devices_view(data, first), data, DEVICE_COLUMNS)


def rollouts_wide_view(data: Any) -> RenderableType:
    return widened(rollouts_view(data), data, ROLLOUT_COLUMNS)


def builds_wide_view(data: Any) -> RenderableType:
    return widened(builds_view(data), data, BUILD_COLUMNS)


WIDE_VIEWS: Mapping[Callable[..., RenderableType], Callable[..., RenderableType]] = {
    devices_view: devices_wide_view,
    rollouts_view: rollouts_wide_view,
    builds_view: builds_wide_view,
}
