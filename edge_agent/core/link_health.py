"""What the agent knows of its tunnel, and when that is worth a new reported state. Purely computational.

The tunnel link (edge_agent/adapters/tunnel.py) keeps a `LinkHealth`; the reported state carries it as the wire's
`TunnelHealth`. Reports are retained MQTT messages that the control plane stores and hands to its rollout engine,
so they must not follow every byte: a change of state (connected or not, since when, the last error, what is
exposed) is told at once, but no more often than once per `min_gap_s`; counters (bytes, reconnects) and a round
trip that moved by more than `RTT_CHANGE` are told at most once per `interval_s`. An idle link with a steady round
trip sends nothing. No I/O and no clock here: the caller passes `now`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from edge_agent.protocol.tunnel import MAX_LINK_ERROR, MAX_RTT_MS, TunnelHealth

RTT_CHANGE = 0.25  # a round trip that moved by more than a quarter ...
RTT_CHANGE_MS = 5.0  # ... and by more than 5 ms is worth telling
MIN_GAP_S = 1.0
MAX_COUNTER = 2**53


@dataclass(frozen=True)
class LinkHealth:
    """The tunnel as the agent sees it: its state, and counters since the agent started."""

    connected: bool = False
    connected_since: datetime | None = None
    reconnects: int = 0
    last_error: str | None = None
    exposed: tuple[str, ...] = ()
    rtt_ms: float | None = None
    bytes_in: int = 0  # reached the device through the tunnel's forwarded connections
    bytes_out: int = 0  # left the device through them


def health_report(health: LinkHealth) -> TunnelHealth:
    """The wire form, within the wire's bounds (a long error is cut, counters saturate)."""
    return TunnelHealth(
        connected=health.connected,
        connected_since=health.connected_since if health.connected else None,
        rtt_ms=None if health.rtt_ms is None else min(max(health.rtt_ms, 0.0), MAX_RTT_MS),
        bytes_in=min(health.bytes_in, MAX_COUNTER),
        bytes_out=min(health.bytes_out, MAX_COUNTER),
        reconnects=min(health.reconnects, MAX_COUNTER),
        last_error=None if health.last_error is None else health.last_error[:MAX_LINK_ERROR],
        exposed=list(health.exposed),
    )


class Change(Enum):
    NONE = "none"
    COUNTERS = "counters"  # bytes, reconnects or a round trip that moved: paced
    STATE = "state"  # connected, since when, last error, exposed services: at once


def change(sent: TunnelHealth | None, current: TunnelHealth) -> Change:
    """How `current` differs from the health last reported (`sent`, None: never reported)."""
    if sent is None:
        return Change.STATE
    state = ("connected", "connected_since", "last_error", "exposed")
    if any(getattr(sent, name) != getattr(current, name) for name in state):
        return Change.STATE
    counters = ("bytes_in", "bytes_out", "reconnects")
    if any(getattr(sent, name) != getattr(current, name) for name in counters) or _rtt_moved(sent, current):
        return Change.COUNTERS
    return Change.NONE


def _rtt_moved(sent: TunnelHealth, current: TunnelHealth) -> bool:
    if sent.rtt_ms is None or current.rtt_ms is None:
        return sent.rtt_ms != current.rtt_ms
    moved = abs(current.rtt_ms - sent.rtt_ms)
    return moved > RTT_CHANGE_MS and moved > RTT_CHANGE * sent.rtt_ms


def report_due_in(
    sent: TunnelHealth | None,
    sent_at: float | None,
    current: TunnelHealth,
    now: float,
    interval_s: float,
    min_gap_s: float = MIN_GAP_S,
) -> float | None:
    """Seconds until `current` should be reported (0: now), or None: nothing worth a report. `sent_at` is when
    the last report left (on the same clock as `now`; None: never)."""
    kind = change(sent, current)
    if kind is Change.NONE:
        return None
    wait = min_gap_s if kind is Change.STATE else interval_s
    if sent_at is None:
        return 0.0
    return max(0.0, wait - (now - sent_at))
