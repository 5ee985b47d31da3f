"""`GET /metrics` of the agent's serving app, in Prometheus' text format: the only importer of prometheus_client
in the agent.

A custom collector reads the agent's own records at scrape time (edge_agent/core/metrics.py decides what they
say); this module keeps no counter of its own, so what Prometheus scrapes and what the rollout gates judge come
from the same `RequestWindow.record` call. It must never record anything, and never label by request content.
"""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from edge_agent.core.metrics import AgentTally, Family, MetricKind, export
from edge_agent.core.serving_table import ServingTable
from edge_agent.core.telemetry import RequestWindow


class AgentCollector(Collector):
    def __init__(self, table: ServingTable, window: RequestWindow, tally: AgentTally) -> None:
        self._table = table
        self._window = window
        self._tally = tally

    def collect(self) -> Iterator[Metric]:
        for family in export(self._table.current(), self._window.totals(), self._tally):
            yield _metric(family)


def _metric(family: Family) -> Metric:
    names = list(family.label_names)
    if family.kind is MetricKind.HISTOGRAM:
        histogram = HistogramMetricFamily(family.name, family.help, labels=names)
        for h in family.histograms:
            buckets = [(_bound(le), float(count)) for le, count in h.buckets] + [("+Inf", float(h.count))]
            histogram.add_metric([v for _, v in h.labels], buckets, h.sum)
        return histogram
    metric: CounterMetricFamily | GaugeMetricFamily
    if family.kind is MetricKind.COUNTER:
        metric = CounterMetricFamily(family.name, family.help, labels=names)
    else:
        metric = GaugeMetricFamily(family.name, family.help, labels=names)
    for sample in family.samples:
        metric.add_metric([v for _, v in sample.labels], sample.value)
    return metric


def _bound(le: float) -> str:
    return repr(float(le))


def metrics_router(table: ServingTable, window: RequestWindow, tally: AgentTally | None = None) -> APIRouter:
    """The `/metrics` route over the agent's records; without a tally, events and downloads read as zero."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(AgentCollector(table, window, tally if tally is not None else AgentTally()))
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
