"""When the tunnel's health is worth a new reported state (pure, with the clock passed in), what the report says
(within the wire's bounds), and the reporter that asks the daemon for one: connecting or dropping at once, but not
more than once a second; bytes, reconnects and a round trip that moved at most once per interval; nothing at all
for an idle link with a steady round trip."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest

from edge_agent.core.link_health import LinkHealth, health_report, report_due_in
from edge_agent.protocol import HardwareFacts, ReportedState
from edge_agent.protocol.tunnel import TunnelHealth
from edge_agent.tunnel_reporting import TunnelReporter

NOW = datetime(2026, 3, 1, tzinfo=UTC)
UP = TunnelHealth(connected=True, connected_since=NOW, rtt_ms=20.0, bytes_in=100, bytes_out=200, exposed=["kserve"])
INTERVAL = 60.0


def up(**changes: object) -> TunnelHealth:
    return UP.model_copy(update=changes)


@pytest.mark.parametrize(
    ("sent", "sent_at", "current", "now", "due"),
    [
        pytest.param(None, None, UP, 0.0, 0.0, id="never-reported"),
        pytest.param(UP, 100.0, UP, 500.0, None, id="nothing-changed"),
        pytest.param(UP, 100.0, up(rtt_ms=23.0), 500.0, None, id="rtt-moved-a-little"),
        pytest.param(UP, 100.0, up(rtt_ms=90.0), 500.0, 0.0, id="rtt-moved-a-lot"),
        pytest.param(UP, 100.0, up(rtt_ms=None), 500.0, 0.0, id="rtt-lost"),
        pytest.param(UP, 100.0, up(bytes_in=101), 110.0, 50.0, id="bytes-wait-for-the-interval"),
        pytest.param(UP, 100.0, up(bytes_out=999), 170.0, 0.0, id="bytes-after-the-interval"),
        pytest.param(UP, 100.0, up(reconnects=1), 130.0, 30.0, id="reconnects-are-counters"),
        pytest.param(UP, 100.0, TunnelHealth(connected=False, last_error="gone"), 130.0, 0.0, id="dropped"),
        pytest.param(UP, 100.0, TunnelHealth(connected=False), 100.25, 0.75, id="dropped-right-after-a-report"),
        pytest.param(UP, 100.0, up(exposed=["kserve", "ssh"]), 200.0, 0.0, id="exposed-changed"),
        pytest.param(UP, 100.0, up(last_error="refused to expose db"), 200.0, 0.0, id="new-error"),
    ],
)
def test_when_the_link_is_worth_a_report(
    sent: TunnelHealth | None, sent_at: float | None, current: TunnelHealth, now: float, due: float | None
) -> None:
    assert report_due_in(sent, sent_at, current, now, INTERVAL) == due


def test_the_report_stays_within_the_wire_bounds() -> None:
    health = LinkHealth(connected=False, connected_since=NOW, last_error="x" * 2000, bytes_in=2**70, rtt_ms=-1.0)
    report = health_report(health)
    assert report.connected_since is None  # only while connected
    assert report.last_error == "x" * 500
    assert report.bytes_in == 2**53 and report.rtt_ms == 0.0


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Link:
    health: LinkHealth = field(default_factory=LinkHealth)

    def __call__(self) -> LinkHealth:
        return self.health


def test_every_report_carries_the_link_as_it_is_and_only_news_asks_for_another() -> None:
    clock, link = Clock(), Link()
    reporter = TunnelReporter(link, lambda: None, INTERVAL, clock)  # its thread is not started: asked directly
    assert reporter.due_in() == 0.0  # nothing told yet
    base = ReportedState(device_id="dev-1", agent_version="1", applied_generation=3, hardware=HardwareFacts(
        gpu_class="cpu-x86_64", arch="x86_64"))  # fmt: skip
    link.health = LinkHealth(connected=True, connected_since=NOW, rtt_ms=12.0, bytes_in=5, exposed=("kserve",))
    sent = reporter.attach(base)
    assert sent.applied_generation == 3 and sent.tunnel == health_report(link.health)
    assert reporter.due_in() is None
    link.health = LinkHealth(connected=True, connected_since=NOW, rtt_ms=12.0, bytes_in=9_000, exposed=("kserve",))
    clock.now += 10
    assert reporter.due_in() == INTERVAL - 10  # bytes wait for the interval
    link.health = LinkHealth(connected=False, reconnects=1, last_error="the gateway closed the connection")
    assert reporter.due_in() == 0.0  # a drop does not
