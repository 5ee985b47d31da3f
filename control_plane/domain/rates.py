"""How much one device may send: a token bucket per device, and when to say that it was over its rate.

Pure: `admit(state, now, policy)` returns the next state and whether the message may be handled; the caller keeps
the state per device. Dropping must cost nothing but this arithmetic, so a device that floods never delays
another's messages. Over-rate messages are counted; `Admission.note` asks the caller to warn (log and record one
event) at most once per `note_every`, with how many were dropped since the last warning.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta


@dataclass(frozen=True)
class RatePolicy:
    per_s: float  # sustained messages per second
    burst: int  # messages allowed at once, after a quiet time
    note_every: timedelta = timedelta(seconds=60)


@dataclass(frozen=True)
class RateState:
    tokens: float
    updated_at: datetime
    dropped: int = 0  # dropped since the last note
    noted_at: datetime | None = None


@dataclass(frozen=True)
class Admission:
    allowed: bool
    note: int | None = None  # when set: warn now that this many messages were dropped


def fresh(policy: RatePolicy, now: datetime) -> RateState:
    return RateState(tokens=float(policy.burst), updated_at=now)


def admit(state: RateState | None, now: datetime, policy: RatePolicy) -> tuple[RateState, Admission]:
    current = state if state is not None else fresh(policy, now)
    elapsed = max((now - current.updated_at).total_seconds(), 0.0)  # a clock stepping back refills nothing
    tokens = min(float(policy.burst), current.tokens + elapsed * policy.per_s)
    if tokens >= 1.0:
        return replace(current, tokens=tokens - 1.0, updated_at=now), Admission(True)
    dropped = current.dropped + 1
    if current.noted_at is None or now - current.noted_at >= policy.note_every:
        return RateState(tokens, now, 0, now), Admission(False, note=dropped)
    return replace(current, tokens=tokens, updated_at=now, dropped=dropped), Admission(False)


def idle(state: RateState, now: datetime, policy: RatePolicy) -> bool:
    """The bucket is full again and nothing is left to report: the caller may forget it."""
    refilled = state.tokens + max((now - state.updated_at).total_seconds(), 0.0) * policy.per_s
    return refilled >= policy.burst and state.dropped == 0
