"""The cells and tables every view is made of: a missing or empty value shows as "-", statuses get a colour.

Pure functions from JSON values to rich renderables: no I/O, no client calls, and never a failure on a field the
server left out (an older or newer server still renders).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

STATUS_STYLES = {
    "succeeded": "green",
    "activated": "green",
    "online": "green",
    "ok": "green",
    "serving": "green",
    "failed": "red",
    "rejected": "red",
    "offline": "red",
    "in_progress": "yellow",
    "running": "yellow",
    "pending": "dim",
    "queued": "dim",
    "waiting_for_builder": "yellow",
    "unknown": "dim",
    "changed": "yellow",
    "unreachable": "red",
    "cancelled": "red",
    "skipped": "dim",
    "refused": "red",
}


def cell(value: Any) -> str:
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    if isinstance(value, list):
        return ", ".join(cell(v) for v in value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def status_text(value: Any) -> Text:
    text = cell(value)
    return Text(text, style=STATUS_STYLES.get(text, ""))


def short(value: Any, length: int = 12) -> str:
    text = cell(value)
    return text if len(text) <= length else text[:length] + "…"


def table(title: str, columns: Sequence[str], rows: Iterable[Sequence[RenderableType]]) -> Table:
    out = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        out.add_column(column, overflow="fold")  # wrap ids and digests, never cut them with an ellipsis
    for row in rows:
        out.add_row(*row)
    return out


def record(title: str, data: dict[str, Any], fields: Sequence[str] | None = None) -> Table:
    """A two-column key/value table for one object."""
    out = Table(title=title, title_justify="left", show_header=False)
    out.add_column("field", style="bold", no_wrap=True)
    out.add_column("value", overflow="fold")
    for key in fields or list(data):
        value = data.get(key)
        out.add_row(key, status_text(value) if key in ("status", "phase", "presence") else cell(value))
    return out
