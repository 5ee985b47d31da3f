"""The control plane's `/metrics`: the figures it reports and how (bounded labels, route templates, a cache per
scrape interval), and the shipped Grafana dashboard naming only metrics the control plane exports."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from control_plane.api.metrics import install_metrics
from control_plane.api.metrics import router as metrics_router
from control_plane.domain.fleet import DeviceFacts, presence
from control_plane.domain.ingest import IngestCounters
from control_plane.domain.rollout_gates import GateReading
from control_plane.services.metrics import MetricsService, MetricsSources, devices_by_presence
from edge_agent.protocol import PresenceStatus
from edge_agent.protocol.vocabulary import Channel
from tests.unit.control_plane.test_rollout_incremental import started
from tests.unit.control_plane.test_rollout_pass_cost import service_over

NOW = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
OFFLINE_AFTER = timedelta(seconds=90)
DASHBOARD = Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "fleet-overview.json"


@dataclass(frozen=True)
class Group:
    gpu_class: str | None
    channel: str
    status: str | None
    seen: bool
    recent: bool
    devices: int


def facts(channel: Channel, status: PresenceStatus | None, last_seen: datetime | None) -> DeviceFacts:
    return DeviceFacts("d", "cpu", {}, None, channel, status, last_seen, 0, None, {})


@pytest.mark.parametrize(
    ("channel", "status", "last_seen"),
    [
        pytest.param(Channel.MQTT, PresenceStatus.ONLINE, None, id="status-online"),
        pytest.param(Channel.MQTT, PresenceStatus.OFFLINE, NOW, id="status-offline-wins-over-recent"),
        pytest.param(Channel.MQTT, None, None, id="never-heard-of"),
        pytest.param(Channel.MQTT, None, NOW - timedelta(seconds=10), id="recently-heard"),
        pytest.param(Channel.MQTT, None, NOW - timedelta(seconds=91), id="silent"),
        pytest.param(Channel.ANSIBLE, None, NOW - timedelta(seconds=10), id="ansible-just-reached"),
        pytest.param(Channel.ANSIBLE, None, NOW - timedelta(days=3), id="ansible-silent-is-unknown"),
    ],
)
def test_a_grouped_count_gives_the_presence_the_domain_gives(channel, status, last_seen) -> None:
    """What the repository's one grouped COUNT hands over (seen, recent) yields the presence `domain.fleet.presence`
    gives the device itself: the gauge and `edgectl devices list` never disagree."""
    expected = presence(facts(channel, status, last_seen), NOW, OFFLINE_AFTER)
    seen = last_seen is not None
    group = Group(
        "cpu", channel.value, status.value if status else None, seen, seen and last_seen >= NOW - OFFLINE_AFTER, 3
    )
    counts = devices_by_presence([group], NOW, OFFLINE_AFTER)
    assert counts[("cpu", expected.value)] == 3
    assert sum(counts.values()) == 3 and len(counts) == 3  # every presence listed, zeros included


class CountingSources:
    def __init__(self) -> None:
        self.reads = 0

    def presence_groups(self, seen_since: datetime) -> list[Group]:
        self.reads += 1
        return [Group(None, "mqtt", "online", True, True, 2)]

    def count_by_phase(self) -> dict[str, int]:
        return {"in_progress": 1}

    def count_by_status(self) -> dict[str, int]:
        return {"queued": 4}


def service(sources: CountingSources, clock: list[float]) -> MetricsService:
    wired = MetricsSources(sources, sources, sources, list, lambda: IngestCounters(received=7, dropped=2), lambda: True)
    return MetricsService(wired, OFFLINE_AFTER, lambda: NOW, lambda: clock[0], min_interval_s=5)


def test_figures_are_read_once_per_scrape_interval() -> None:
    sources, clock = CountingSources(), [100.0]
    metrics = service(sources, clock)
    first = metrics.figures()
    clock[0] = 104.9
    assert metrics.figures() is first and sources.reads == 1  # a second scraper within the interval: no query
    clock[0] = 105.0
    metrics.figures()
    assert sources.reads == 2


def scraped_app(sources: CountingSources) -> TestClient:
    app = FastAPI()
    install_metrics(app)
    app.include_router(metrics_router)

    @app.get("/v1/devices/{device_id}")
    def device(device_id: str) -> dict[str, str]:
        return {"id": device_id}

    app.state.runtime = SimpleNamespace(metrics=service(sources, [0.0]))
    return TestClient(app)


def test_the_exposition_names_units_totals_and_bounded_labels() -> None:
    client = scraped_app(CountingSources())
    client.get("/v1/devices/secret-device-0042")
    client.get("/wp-admin/../../etc/passwd")
    client.request("XYZZY", "/v1/devices/d1")
    text = client.get("/metrics").text
    assert 'edge_control_plane_devices{gpu_class="none",presence="online"} 2.0' in text
    assert 'edge_control_plane_rollouts{phase="in_progress"} 1.0' in text
    assert 'edge_control_plane_rollouts{phase="succeeded"} 0.0' in text  # every phase, zeros included
    assert 'edge_control_plane_builds{status="queued"} 4.0' in text
    assert "edge_control_plane_mqtt_messages_received_total 7.0" in text
    assert "edge_control_plane_mqtt_messages_dropped_total 2.0" in text
    assert 'route="/v1/devices/{device_id}"' in text and 'route="unmatched"' in text
    # What a client sent never becomes a label value: no device id, no probed path.
    assert "secret-device-0042" not in text and "passwd" not in text and "wp-admin" not in text
    assert "XYZZY" not in text and 'method="other"' in text


def exported_names() -> set[str]:
    """Every series name the control plane's exposition declares (a histogram's _bucket, _sum and _count too)."""
    text = scraped_app(CountingSources()).get("/metrics").text
    declared = dict(line.split(" ")[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    suffixes = {"histogram": ("_bucket", "_sum", "_count")}
    return {name + suffix for name, kind in declared.items() for suffix in suffixes.get(kind, ("",))}


def test_the_grafana_dashboard_queries_only_what_the_control_plane_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = exported_names()
    assert dashboard["panels"], "the dashboard has panels"
    for panel in dashboard["panels"]:
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        for target in panel["targets"]:
            named = set(re.findall(r"\bedge_[a-z_]+\b", target["expr"]))
            assert named, f"panel {panel['title']!r} queries no metric of ours: {target['expr']}"
            assert named <= exported, f"panel {panel['title']!r} names unknown metrics {sorted(named - exported)}"


def test_the_current_gates_are_exported_with_their_thresholds_and_judgement() -> None:
    """A gate with too few requests shows its values and thresholds but no judgement; a breached one shows 0."""
    state = started(2)
    found = [
        (
            state,
            "all",
            (GateReading("requests", 40, 100, None, "min"), GateReading("error_rate", 0.05, 0.01, False, "max")),
        )
    ]
    sources = CountingSources()
    app = scraped_app(sources)
    wired = MetricsSources(sources, sources, sources, lambda: found, IngestCounters, lambda: False)
    app.app.state.runtime = SimpleNamespace(metrics=MetricsService(wired, OFFLINE_AFTER, lambda: NOW, lambda: 0.0))
    text = app.get("/metrics").text
    labels = f'model="m",rollout="{state.id}",step="all"'
    assert f'edge_control_plane_rollout_gate_value{{gate="requests",{labels}}} 40.0' in text
    assert f'edge_control_plane_rollout_gate_threshold{{gate="requests",{labels}}} 100.0' in text
    assert f'edge_control_plane_rollout_gate_passing{{gate="error_rate",{labels}}} 0.0' in text
    assert f'edge_control_plane_rollout_gate_passing{{gate="requests",{labels}}}' not in text  # not judged yet
    assert "edge_control_plane_mqtt_connected 0.0" in text


def test_the_rollout_service_hands_over_the_current_gates_without_reading_the_fleet(tmp_path: Path) -> None:
    service, fleet, _ = service_over(tmp_path, 20, gates={"max_error_rate": 0.1, "min_requests": 5}, bake_s=60)
    [(state, step, readings)] = service.current_gate_readings()
    assert (state.id, step) == ("r1", "all")
    assert [(r.name, r.threshold) for r in readings] == [("failed", 0), ("requests", 5), ("error_rate", 0.1)]
    assert fleet.reads == [] and fleet.listed == 0  # from the executor's memory: no query per scrape
