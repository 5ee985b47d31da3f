"""A cap on the large request bodies the agent reads at once, so a burst of them cannot exhaust its memory.

A request whose declared body is over `large_request_bytes`, or of unknown size (chunked: it may grow to the body
limit), takes one of `max_large_requests` places before its body is read, and gives it back when its answer is
made. With every place taken it is answered at once, before a byte of its body is read: 503 with Retry-After, in
the protocol's error shape. Requests under the threshold never wait for a place, so small ones keep being served
during a burst of large ones. The decision is pure (`is_large`); the count is the only state. Must never read a
body for a request it refuses, nor keep a place after the request is over, whatever way it ended.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from edge_agent.serving.errors import ProtocolError
from edge_agent.serving.limits import ServingLimits

RETRY_AFTER_S = 1


def is_large(declared: int | None, threshold: int) -> bool:
    """A body of unknown size (chunked) counts as large: it may grow to the body limit."""
    return declared is None or declared > threshold


class LargeRequests:
    """Places for large request bodies; `admitted` holds one for its block, or refuses with a 503."""

    def __init__(self, limits: ServingLimits) -> None:
        self._threshold = limits.large_request_bytes
        self._places = limits.max_large_requests
        self._taken = 0
        self._lock = threading.Lock()

    @contextmanager
    def admitted(self, declared: int | None) -> Iterator[None]:
        if not is_large(declared, self._threshold):
            yield
            return
        with self._lock:
            if self._taken >= self._places:
                raise self._busy(declared)
            self._taken += 1
        try:
            yield
        finally:
            with self._lock:
                self._taken -= 1

    def _busy(self, declared: int | None) -> ProtocolError:
        size = "of unknown size (chunked)" if declared is None else f"of {declared} bytes"
        return ProtocolError(
            f"this agent is reading {self._places} large request bodies already, the most it takes at once "
            f"(serving.max_large_requests; large: over serving.large_request_bytes = {self._threshold} bytes, or "
            f"chunked); this body {size} was not read: retry after {RETRY_AFTER_S} s, or send smaller batches",
            503,
            {"Retry-After": str(RETRY_AFTER_S)},
        )
