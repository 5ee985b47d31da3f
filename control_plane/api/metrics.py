"""`GET /metrics` in Prometheus' text format, and the HTTP request-duration histogram behind it: the only importer
of prometheus_client in the control plane.

The fleet, rollout, build and ingest figures are read at scrape time from `MetricsService` (grouped counts, kept
for a few seconds) by a custom collector; only the request durations are measured here, by an ASGI middleware
that labels each request by its route template (`/v1/devices/{device_id}`), never by its raw path: a client
requesting random paths cannot grow the label set (unmatched paths share one `route` value). The route needs the
`metrics:read` permission (a `metrics` token for Prometheus; docs/operations.md, "Metrics").
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.services.metrics import Figures, MetricsService

UNMATCHED = "unmatched"  # the route label of a request no route matched (a 404 or a probe)
# HTTP servers take any token as a method: anything else is labelled "other", so the label set stays bounded.
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

router = APIRouter()


@router.get(
    "/metrics",
    tags=["system"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}, "description": "The exposition."}},
)
def metrics(request: Request) -> Response:
    """Prometheus text exposition: fleet, rollouts, gates, builds, MQTT ingest and HTTP request durations."""
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def install_metrics(app: FastAPI) -> None:
    """A registry of the app's own (never the client's global one: two apps in one process stay apart), the
    request-duration middleware, and the collector that reads the runtime's `MetricsService` at scrape time."""
    registry = CollectorRegistry(auto_describe=False)
    durations = Histogram(
        "edge_control_plane_http_request_duration_seconds",
        "Time from a request's arrival to the end of its response, by method, route template and status code.",
        ("method", "route", "status"),
        buckets=_DURATION_BUCKETS,
        registry=registry,
    )
    registry.register(FleetCollector(app))
    app.state.metrics_registry = registry
    app.add_middleware(RequestDurations, durations=durations)


class RequestDurations:
    """Pure ASGI (a `BaseHTTPMiddleware` would buffer Server-Sent Events): times each HTTP request to the end of
    its response. A stream (rollout events) is timed until it ends."""

    def __init__(self, app: ASGIApp, durations: Histogram) -> None:
        self.app = app
        self._durations = durations

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            route = _route_template(scope)
            method = scope["method"] if scope["method"] in METHODS else "other"
            self._durations.labels(method, route, str(status)).observe(time.perf_counter() - started)


def _route_template(scope: Scope) -> str:
    app = scope.get("app")
    return _template_in(getattr(getattr(app, "router", None), "routes", ()), scope)


def _template_in(routes: Iterable[Any], scope: Scope) -> str:
    """The path template of the route that takes this request (FastAPI keeps an included router's routes behind
    one route holding `original_router`: walked into), or `UNMATCHED`."""
    for route in routes:
        inner = getattr(route, "original_router", None)
        if inner is not None:
            found = _template_in(inner.routes, scope)
            if found != UNMATCHED:
                return found
            continue
        match, _ = route.matches(scope)
        if match is Match.FULL:
            return str(getattr(route, "path", UNMATCHED))
    return UNMATCHED


class FleetCollector(Collector):
    """Reads the figures at scrape time: nothing is counted twice, nothing is kept here."""

    def __init__(self, app: FastAPI) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        runtime = getattr(self._app.state, "runtime", None)
        if runtime is None:  # not started (or shutting down): only the request durations are there
            return
        service: MetricsService = runtime.metrics
        yield from figure_families(service.figures())


def figure_families(figures: Figures) -> Iterator[Metric]:
    yield from _fleet(figures)
    yield from _gates(figures)
    yield from _ingest(figures)


def _gauge(name: str, help_text: str, labels: list[str], values: dict[tuple[str, ...], float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, help_text, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def _fleet(figures: Figures) -> Iterator[Metric]:
    yield _gauge(
        "edge_control_plane_devices",
        "Enrolled devices by GPU class (none: not known) and presence (online, offline, unknown).",
        ["gpu_class", "presence"],
        {key: float(count) for key, count in figures.devices.items()},
    )
    yield _gauge(
        "edge_control_plane_rollouts",
        "Rollouts by phase.",
        ["phase"],
        {(phase,): float(count) for phase, count in figures.rollouts.items()},
    )
    yield _gauge(
        "edge_control_plane_builds",
        "Builds by status (queued and running: the build queue).",
        ["status"],
        {(status,): float(count) for status, count in figures.builds.items()},
    )
    connected = 1.0 if figures.mqtt_connected else 0.0
    yield _gauge("edge_control_plane_mqtt_connected", "1 while connected to the broker.", [], {(): connected})


def _gates(figures: Figures) -> Iterator[Metric]:
    labels = ["rollout", "model", "step", "gate"]
    values: dict[tuple[str, ...], float] = {}
    thresholds: dict[tuple[str, ...], float] = {}
    passing: dict[tuple[str, ...], float] = {}
    for g in figures.gates:
        key = (g.rollout, g.model, g.step, g.gate)
        thresholds[key] = g.threshold
        if g.value is not None:
            values[key] = g.value
        if g.ok is not None:
            passing[key] = 1.0 if g.ok else 0.0
    yield _gauge(
        "edge_control_plane_rollout_gate_value",
        "The current step's gate values of each rollout in progress (failed, requests, error_rate, p99_ms, "
        "p99_ratio): what the gate judges, from the devices' telemetry windows.",
        labels,
        values,
    )
    yield _gauge(
        "edge_control_plane_rollout_gate_threshold",
        "The threshold each gate value is judged against (requests: a minimum; the others: a maximum).",
        labels,
        thresholds,
    )
    yield _gauge(
        "edge_control_plane_rollout_gate_passing",
        "1 while a gate value is within its threshold, 0 when it breaks it; absent while not judged yet.",
        labels,
        passing,
    )


def _ingest(figures: Figures) -> Iterator[Metric]:
    counters = figures.ingest
    for name, help_text, value in (
        ("edge_control_plane_mqtt_messages_received", "MQTT messages handed to the ingest queue.", counters.received),
        (
            "edge_control_plane_mqtt_messages_dropped",
            "MQTT messages dropped (queue full).",
            counters.dropped,
        ),
        ("edge_control_plane_mqtt_messages_applied", "MQTT messages the ingest writer applied.", counters.applied),
        ("edge_control_plane_ingest_batches", "Batches the ingest writer stored.", counters.batches),
        ("edge_control_plane_ingest_resyncs", "Re-fetches of retained topics after drops.", counters.resyncs),
    ):
        family = CounterMetricFamily(name, help_text)
        family.add_metric([], float(value))
        yield family
    for name, help_text, value in (
        ("edge_control_plane_ingest_queue_messages", "Messages waiting in the ingest queue.", counters.queued),
        ("edge_control_plane_ingest_queue_bytes", "Bytes waiting in the ingest queue.", counters.queued_bytes),
        ("edge_control_plane_ingest_queue_capacity_messages", "The ingest queue's capacity.", counters.capacity),
        ("edge_control_plane_ingest_resync_pending_devices", "Devices still to re-fetch.", counters.resync_pending),
    ):
        yield _gauge(name, help_text, [], {(): float(value)})
