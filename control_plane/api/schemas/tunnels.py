"""Public JSON schemas of the tunnel-session routes (docs/tunnels.md, "Sessions")."""

from __future__ import annotations

from datetime import datetime

from pydantic import computed_field

from control_plane.api.schemas.base import Out
from control_plane.domain.tunnel_sessions import SessionEnd, SessionKind


class TunnelSessionOut(Out):
    id: str
    who: str
    subject: str
    device_id: str
    service: str
    kind: SessionKind
    request: str | None
    opened_at: datetime
    closed_at: datetime | None
    bytes_to_device: int
    bytes_from_device: int
    ended: SessionEnd | None
    error: str | None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duration_s(self) -> float | None:
        """Seconds from open to close (None while open)."""
        if self.closed_at is None:
            return None
        return round((self.closed_at - self.opened_at).total_seconds(), 3)
