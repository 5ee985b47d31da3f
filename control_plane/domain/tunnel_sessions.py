"""Tunnel sessions as audited objects: who reached which service of which device, when, how many bytes each way, and
how it ended; when a session has been idle or open too long; which headers cross the HTTP proxy.

A session is one proxied HTTP exchange (`http`) or one raw TCP connection (`tcp`, `edgectl tunnel open`) from an
operator to a device's exposed service (docs/tunnels.md). Pure values and decisions: no clock reads (`now` is
passed in), no sockets, no database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import Enum

from control_plane.domain.errors import BadGateway

MAX_REQUEST_CHARS = 512  # "POST /v2/models/m/infer": what an http session asked for, without its query


class SessionKind(str, Enum):
    HTTP = "http"  # one request through /v1/devices/{id}/services/{name}/...
    TCP = "tcp"  # one connection through the WebSocket route (`edgectl tunnel open`)


class SessionEnd(str, Enum):
    """How a session ended; an `ERROR` ending carries its text beside it."""

    COMPLETED = "completed"  # an HTTP exchange whose answer was relayed whole
    CLIENT_CLOSED = "closed by client"
    SERVICE_CLOSED = "closed by the device's service"
    DEVICE_GONE = "device gone"  # not connected, or its tunnel closed while the session was open
    IDLE_TIMEOUT = "idle timeout"
    ABSOLUTE_TIMEOUT = "absolute timeout"
    OPERATOR_CLOSED = "closed by operator"
    ERROR = "error"


class NotConnected(BadGateway):
    """Nothing listens at the device's service socket: its tunnel is down, or it never exposed that service (502)."""


@dataclass(frozen=True)
class TunnelSession:
    id: str
    subject: str  # the principal's stable id (token:<id>, oidc:<sub>)
    who: str  # the principal's name, as the audit log shows it
    device_id: str
    service: str
    kind: SessionKind
    opened_at: datetime
    request: str | None = None  # http: method and path (never the query: it may hold a secret)
    closed_at: datetime | None = None
    bytes_to_device: int = 0
    bytes_from_device: int = 0
    ended: SessionEnd | None = None
    error: str | None = None

    @property
    def open(self) -> bool:
        return self.closed_at is None


@dataclass(frozen=True)
class SessionLimits:
    idle: timedelta  # no byte either way for this long: closed
    absolute: timedelta  # open this long: closed, whatever it carries


def overdue(opened_at: datetime, last_active: datetime, now: datetime, limits: SessionLimits) -> SessionEnd | None:
    """Why an open session must close at `now`, or None. The absolute limit wins when both passed."""
    if now - opened_at >= limits.absolute:
        return SessionEnd.ABSOLUTE_TIMEOUT
    if now - last_active >= limits.idle:
        return SessionEnd.IDLE_TIMEOUT
    return None


def request_line(method: str, path: str) -> str:
    """What an http session records it asked for: `METHOD /path`, bounded, without a query string."""
    return f"{method.upper()} /{path.lstrip('/')}".replace("\x00", "\ufffd")[:MAX_REQUEST_CHARS]


# RFC 9110 7.6.1: connection-specific headers, meaningful for one hop only, plus what HTTP/1.1 proxies also drop.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Never sent on to a device: the operator's credential for the control plane (the device must not learn it),
# cookies meant for the control plane, and the Host the operator addressed (the device's service gets its own).
NOT_FORWARDED_TO_DEVICE = frozenset({"authorization", "cookie", "host", "expect"})
# Never relayed back to the operator: what the control plane's own answer sets for itself.
NOT_RELAYED_FROM_DEVICE = frozenset({"set-cookie", "x-request-id"})


def forwarded_headers(headers: Iterable[tuple[str, str]], dropped: frozenset[str]) -> list[tuple[str, str]]:
    """`headers` less the hop-by-hop ones, those the `Connection` header names, and `dropped` (lower-case names)."""
    pairs = [(name.lower(), value) for name, value in headers]
    named = {token.strip().lower() for name, value in pairs if name == "connection" for token in value.split(",")}
    return [(name, value) for name, value in pairs if name not in HOP_BY_HOP | named | dropped]
