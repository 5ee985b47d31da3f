"""The tunnel's health in the agent's reported state: attached to every report the daemon sends, and a report
asked for when the health changed enough to be worth one (the pure pacing of edge_agent/core/link_health.py:
connecting or dropping at once, no more often than once a second; counters at most once per
`tunnel.health_interval_s`).

One thread waits for the link's change signal or the next due time and asks the daemon for a report; it never
publishes by itself, so a report always carries the models and the tunnel as they are at that moment.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from edge_agent.core.link_health import MIN_GAP_S, LinkHealth, health_report, report_due_in
from edge_agent.protocol import ReportedState
from edge_agent.protocol.tunnel import TunnelHealth


class TunnelReporter:
    def __init__(
        self,
        health: Callable[[], LinkHealth],
        ask_report: Callable[[], None],
        interval_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._health = health
        self._ask_report = ask_report
        self._interval_s = interval_s
        self._monotonic = monotonic
        self._sent: TunnelHealth | None = None
        self._sent_at: float | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="tunnel-report", daemon=True)

    def attach(self, reported: ReportedState) -> ReportedState:
        """`reported` with the link's health as it is now (remembered as the health last told)."""
        current = health_report(self._health())
        with self._lock:
            self._sent, self._sent_at = current, self._monotonic()
        return reported.model_copy(update={"tunnel": current})

    def changed(self) -> None:
        """The link's state changed (called from its thread)."""
        self._wake.set()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=10)

    def due_in(self) -> float | None:
        """Seconds until a report is due (0: now), or None: nothing new to tell."""
        current = health_report(self._health())
        with self._lock:
            sent, sent_at = self._sent, self._sent_at
        return report_due_in(sent, sent_at, current, self._monotonic(), self._interval_s)

    def _loop(self) -> None:
        timeout = self._interval_s
        while True:
            self._wake.wait(timeout)
            self._wake.clear()
            if self._stopping:
                return
            due = self.due_in()
            if due == 0:
                self._ask_report()
                timeout = MIN_GAP_S  # the report attaches what it tells; look again no sooner than this
            else:
                timeout = self._interval_s if due is None else due
