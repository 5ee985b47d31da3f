"""Polling with a deadline: every wait in `edgectl` (rollout --wait, train --wait, the demo) goes through here.

There is no wait without a deadline: `poll_until` raises `WaitTimeout` naming what it waited for. It reads the
monotonic clock and sleeps between polls; callers give it what to fetch and how to judge it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

from control_plane.cli.client import CliError

T = TypeVar("T")


class WaitTimeout(CliError):
    """A deadline passed; the message says what was awaited and the last thing seen."""


def poll_until(
    fetch: Callable[[], T],
    done: Callable[[T], bool],
    *,
    timeout: float,
    what: str,
    interval: float = 0.25,
    on_update: Callable[[T], None] | None = None,
    describe: Callable[[T], str] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fetch` until `done(value)`; `on_update` sees every value. Raises WaitTimeout after `timeout` s."""
    deadline = clock() + timeout
    while True:
        value = fetch()
        if on_update is not None:
            on_update(value)
        if done(value):
            return value
        if clock() >= deadline:
            last = f" (last seen: {describe(value)})" if describe is not None else ""
            raise WaitTimeout(f"timed out after {timeout:g}s waiting for {what}{last}")
        sleep(interval)
