"""Tunnel sessions as `edgectl tunnel list` and `tunnel close` show them: who reached which device's service, when,
bytes each way, and how it ended. Pure: JSON in, a renderable out."""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType

from control_plane.cli.views.cells import cell, record, table

SESSION_FIELDS = (
    "id",
    "who",
    "device_id",
    "service",
    "kind",
    "request",
    "opened_at",
    "closed_at",
    "duration_s",
    "bytes_to_device",
    "bytes_from_device",
    "ended",
    "error",
)


def tunnel_sessions_view(data: Any, first: bool = True) -> RenderableType:
    """A table of sessions; a later page of a paged list (`first` False) has neither title nor header."""
    columns = ["id", "who", "device", "service", "kind", "opened", "to device", "from device", "ended"]
    rows = (
        [
            cell(s.get("id")),
            cell(s.get("who")),
            cell(s.get("device_id")),
            cell(s.get("service")),
            cell(s.get("kind")),
            cell(s.get("opened_at")),
            cell(s.get("bytes_to_device")),
            cell(s.get("bytes_from_device")),
            cell(_ending(s) if s.get("closed_at") else "open"),
        ]
        for s in data
    )
    shown = table("tunnel sessions" if first else "", columns, rows)
    shown.show_header = first
    return shown


def tunnel_session_view(data: Any) -> RenderableType:
    return record(f"tunnel session {data.get('id')}", data, SESSION_FIELDS)


def _ending(session: dict[str, Any]) -> str:
    ended, error = session.get("ended"), session.get("error")
    return f"{ended}: {error}" if ended and error else str(ended or "-")
