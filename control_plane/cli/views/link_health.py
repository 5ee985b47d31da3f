"""The "tunnel" section of `edgectl devices show`: the device's link to the tunnel gateway as its agent last
reported it (`reported.tunnel`, docs/tunnels.md): connected since, round trip, bytes each way, reconnects, the
last error. It is the device's own word, shown as such; a device that is offline shows what it said last.

Pure functions from JSON data to a renderable: no I/O, and nothing shown at all for a device without a tunnel.
"""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType

from control_plane.cli.views.cells import cell, record

_UNITS = ("B", "kB", "MB", "GB", "TB", "PB")


def tunnel_view(device: dict[str, Any]) -> RenderableType | None:
    """The device's tunnel as it reported it, or None when it reports none (no tunnel, or an older agent)."""
    health = (device.get("reported") or {}).get("tunnel")
    if not isinstance(health, dict):
        return None
    connected = bool(health.get("connected"))
    state = f"yes, since {cell(health.get('connected_since'))}" if connected else "no"
    rows = {
        "connected": state,
        "round trip": _ms(health.get("rtt_ms")),
        "bytes in / out": f"{size(health.get('bytes_in'))} / {size(health.get('bytes_out'))}",
        "reconnects": cell(health.get("reconnects")),
        "exposed": cell(health.get("exposed")),
        "last error": cell(health.get("last_error")),
    }
    if _offline(device):
        rows["note"] = "the device is offline now: this is what it said last"
    return record("tunnel (as the device reported it)", rows)


def size(value: Any) -> str:
    """Bytes for people: 512 B, 1.5 kB, 12.3 MB (powers of 1000, as network figures are)."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return "-"
    amount, unit = float(value), 0
    while amount >= 1000 and unit < len(_UNITS) - 1:
        amount, unit = amount / 1000, unit + 1
    return f"{int(amount)} {_UNITS[0]}" if unit == 0 else f"{amount:.1f} {_UNITS[unit]}"


def _ms(value: Any) -> str:
    return f"{value:.1f} ms" if isinstance(value, int | float) and not isinstance(value, bool) else "-"


def _offline(device: dict[str, Any]) -> bool:
    return device.get("presence") == "offline"
