"""When to ask again: exponential backoff with jitter, capped. Pure (the random draw comes in)."""

from __future__ import annotations


def next_delay(attempt: int, initial_s: float, cap_s: float, draw: float, hint_s: float | None = None) -> float:
    """Seconds to wait before attempt `attempt + 1` (attempt counts from 0).

    The wait doubles from `initial_s`, is at least what the server hinted (`Retry-After`-like), never more than
    `cap_s`, and is then drawn uniformly from its upper half (`draw` in [0, 1)): many devices provisioned together
    do not ask in step.
    """
    base = min(cap_s, max(initial_s * 2.0 ** min(attempt, 32), hint_s or 0.0))
    return base * (0.5 + 0.5 * min(max(draw, 0.0), 1.0))
