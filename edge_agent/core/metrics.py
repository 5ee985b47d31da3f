"""What the agent's `/metrics` exports, decided from the agent's own records: the request window's running totals
(`telemetry.RequestWindow`, the same `record` call the rollout gates' telemetry comes from), the serving table
(what is loaded, in which slot), and a tally of the step events the core emits and of download progress.

Pure: no Prometheus client here (edge_agent/serving/metrics.py turns these values into its exposition), no clock,
no I/O. It must never count a request itself: requests are counted once, by the request window.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum

from edge_agent.core.serving_table import TableSnapshot
from edge_agent.core.telemetry import LATENCY_BUCKETS_S, VersionTotals
from edge_agent.protocol import DeviceEvent, EventStep

Labels = tuple[tuple[str, str], ...]


class MetricKind(str, Enum):
    COUNTER = "counter"
    GAUGE = "gauge"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class Sample:
    labels: Labels
    value: float


@dataclass(frozen=True)
class HistogramSample:
    labels: Labels
    buckets: tuple[tuple[float, int], ...]  # (upper bound in seconds, cumulative count); +Inf is `count`
    count: int
    sum: float


@dataclass(frozen=True)
class Family:
    """One metric: `name` without the `_total` suffix of a counter (the client adds it), its help and samples."""

    name: str
    kind: MetricKind
    help: str
    label_names: tuple[str, ...]
    samples: tuple[Sample, ...] = ()
    histograms: tuple[HistogramSample, ...] = ()


# Step events counted, and the (metric, result label) each adds to; everything else is a progress note.
_COUNTED: dict[EventStep, tuple[str, str]] = {
    EventStep.ACTIVATED: ("swaps", ""),
    EventStep.ROLLED_BACK: ("rollbacks", ""),
    EventStep.SELF_TEST_PASSED: ("self_tests", "passed"),
    EventStep.SELF_TEST_FAILED: ("self_tests", "failed"),
}


class AgentTally:
    """Counts of the core's step events (per model) and of download bytes and retries since the agent started.

    The daemon hands `count_event` every event the core emits, before it publishes it, and the HTTP fetcher its
    bytes and retries. Thread-safe: the apply worker writes, scrapes read. Model names come from the core's own
    events (what the signed desired state named), so the label set stays as small as the device's models.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._events: dict[tuple[str, str, str], int] = {}
        self._download_bytes = 0
        self._download_retries = 0

    def count_event(self, event: DeviceEvent) -> None:
        counted = _COUNTED.get(event.step)
        if counted is None or event.model is None:
            return
        key = (counted[0], event.model, counted[1])
        with self._lock:
            self._events[key] = self._events.get(key, 0) + 1

    def counting(self, sink: Callable[[DeviceEvent], None]) -> Callable[[DeviceEvent], None]:
        """`sink`, after counting each event (the daemon's event publisher)."""

        def counted(event: DeviceEvent) -> None:
            self.count_event(event)
            sink(event)

        return counted

    def downloaded(self, size: int) -> None:
        with self._lock:
            self._download_bytes += size

    def retried(self) -> None:
        with self._lock:
            self._download_retries += 1

    def events(self) -> dict[tuple[str, str, str], int]:
        with self._lock:
            return dict(self._events)

    def downloads(self) -> tuple[int, int]:
        with self._lock:
            return self._download_bytes, self._download_retries


def export(snapshot: TableSnapshot, totals: list[VersionTotals], tally: AgentTally) -> list[Family]:
    """Every family the agent exposes, from what it already recorded. Counters without samples are still listed,
    so that a dashboard finds the series before the first request."""
    return [*_requests(totals), *_serving(snapshot), *_events(tally), *_downloads(tally)]


def _requests(totals: list[VersionTotals]) -> list[Family]:
    names = ("model", "version")
    of = [((("model", t.name), ("version", str(t.version))), t) for t in totals]
    return [
        Family(
            "edge_agent_inference_requests",
            MetricKind.COUNTER,
            "Inference requests a model version answered or failed on (client errors, 4xx, are not counted).",
            names,
            tuple(Sample(labels, t.requests) for labels, t in of),
        ),
        Family(
            "edge_agent_inference_errors",
            MetricKind.COUNTER,
            "Inference requests that failed in the model runtime (HTTP 500).",
            names,
            tuple(Sample(labels, t.errors) for labels, t in of),
        ),
        Family(
            "edge_agent_inference_duration_seconds",
            MetricKind.HISTOGRAM,
            "Time the model runtime took for a successful inference request.",
            names,
            histograms=tuple(
                HistogramSample(labels, _buckets(t), t.latency_count, t.latency_sum_s) for labels, t in of
            ),
        ),
    ]


def _buckets(totals: VersionTotals) -> tuple[tuple[float, int], ...]:
    return tuple(zip(LATENCY_BUCKETS_S, totals.bucket_counts, strict=True))


def _serving(snapshot: TableSnapshot) -> list[Family]:
    loaded: list[Sample] = []
    active: list[Sample] = []
    for name, served in sorted(snapshot.models.items()):
        active.append(Sample((("model", name),), served.active.version))
        for slot, model in (("active", served.active), ("previous", served.previous)):
            if model is not None:
                loaded.append(Sample((("model", name), ("version", str(model.version)), ("slot", slot)), 1))
    return [
        Family(
            "edge_agent_model_active_version",
            MetricKind.GAUGE,
            "The version of each model that answers unversioned requests.",
            ("model",),
            tuple(active),
        ),
        Family(
            "edge_agent_model_loaded",
            MetricKind.GAUGE,
            "1 for each loaded model version, by slot: active, or previous (kept for a rollback without download).",
            ("model", "version", "slot"),
            tuple(loaded),
        ),
        Family(
            "edge_agent_ready",
            MetricKind.GAUGE,
            "1 when every model the journal names as active is loaded (what /v2/health/ready answers).",
            (),
            (Sample((), 1 if snapshot.ready else 0),),
        ),
    ]


def _events(tally: AgentTally) -> list[Family]:
    counts = tally.events()

    def of(metric: str, with_result: bool) -> tuple[Sample, ...]:
        return tuple(
            Sample((("model", model), ("result", result)) if with_result else (("model", model),), count)
            for (kind, model, result), count in sorted(counts.items())
            if kind == metric
        )

    return [
        Family(
            "edge_agent_model_swaps",
            MetricKind.COUNTER,
            "Versions switched into the active slot by an apply (a new build, or the previous one restored).",
            ("model",),
            of("swaps", False),
        ),
        Family(
            "edge_agent_model_rollbacks",
            MetricKind.COUNTER,
            "Rollbacks to the previous version (a failed apply, or a rollback the control plane asked for).",
            ("model",),
            of("rollbacks", False),
        ),
        Family(
            "edge_agent_self_tests",
            MetricKind.COUNTER,
            "Self-tests of a loaded version against its reference outputs, by result (passed, failed).",
            ("model", "result"),
            of("self_tests", True),
        ),
    ]


def _downloads(tally: AgentTally) -> list[Family]:
    size, retries = tally.downloads()
    return [
        Family(
            "edge_agent_artifact_download_bytes",
            MetricKind.COUNTER,
            "Artifact bytes received over HTTP (resumed transfers count only what was received again).",
            (),
            (Sample((), size),),
        ),
        Family(
            "edge_agent_artifact_download_retries",
            MetricKind.COUNTER,
            "Artifact download attempts retried after a temporary failure.",
            (),
            (Sample((), retries),),
        ),
    ]
