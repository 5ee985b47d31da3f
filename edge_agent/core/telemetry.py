"""Per-model request counts, errors and latency: a sliding window (what the agent sends, what the rollout gates
judge) and running totals with a latency histogram (what `/metrics` exposes), both fed by the one `record` call a
served request makes, so the gates and Prometheus never count different requests. Pure: time is passed in.

Thread-safe (serving threads record, the telemetry thread and scrapes read); holds no clock of its own. It must
never keep a second counter anyone else records into: one request, one `record`.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import deque
from dataclasses import dataclass

from edge_agent.protocol import ModelTelemetry

# Upper bounds (seconds) of the latency histogram's buckets; +Inf is implied. Spans a fast edge model (sub-ms) to a
# slow one on a small CPU (seconds).
LATENCY_BUCKETS_S: tuple[float, ...] = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass(frozen=True)
class _Sample:
    at: float
    name: str
    version: int
    latency_ms: float
    ok: bool


@dataclass(frozen=True)
class VersionTotals:
    """Everything one model version answered since the agent started. `bucket_counts[i]` counts successful requests
    at or under `LATENCY_BUCKETS_S[i]` (cumulative, as Prometheus wants); `latency_count` counts them all."""

    name: str
    version: int
    requests: int
    errors: int
    bucket_counts: tuple[int, ...]
    latency_count: int
    latency_sum_s: float


class _Running:
    def __init__(self) -> None:
        self.requests = 0
        self.errors = 0
        self.buckets = [0] * (len(LATENCY_BUCKETS_S) + 1)  # per bucket, the last one +Inf
        self.latency_sum_s = 0.0

    def add(self, latency_ms: float, ok: bool) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
            return
        seconds = latency_ms / 1000
        self.buckets[bisect_left(LATENCY_BUCKETS_S, seconds)] += 1
        self.latency_sum_s += seconds

    def frozen(self, name: str, version: int) -> VersionTotals:
        cumulative: list[int] = []
        for count in self.buckets[:-1]:
            cumulative.append((cumulative[-1] if cumulative else 0) + count)
        return VersionTotals(
            name, version, self.requests, self.errors, tuple(cumulative), sum(self.buckets), self.latency_sum_s
        )


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class RequestWindow:
    def __init__(self, window_s: float, max_samples: int = 100_000) -> None:
        self.window_s = window_s
        self._samples: deque[_Sample] = deque(maxlen=max_samples)
        self._lock = threading.Lock()
        self._totals: dict[tuple[str, int], _Running] = {}

    def record(self, now: float, name: str, version: int, latency_ms: float, ok: bool) -> None:
        """One served request (ok) or runtime failure: into the window and the running totals at once."""
        with self._lock:
            self._samples.append(_Sample(now, name, version, latency_ms, ok))
            self._totals.setdefault((name, version), _Running()).add(latency_ms, ok)

    def totals(self) -> list[VersionTotals]:
        """The running totals per model version, by name and version (what a scrape reads)."""
        with self._lock:
            return [running.frozen(name, version) for (name, version), running in sorted(self._totals.items())]

    def snapshot(self, now: float) -> list[ModelTelemetry]:
        """Statistics of the samples recorded in (now - window_s, now], one entry per model version."""
        with self._lock:
            while self._samples and self._samples[0].at <= now - self.window_s:
                self._samples.popleft()
            samples = list(self._samples)
        groups: dict[tuple[str, int], list[_Sample]] = {}
        for sample in samples:
            groups.setdefault((sample.name, sample.version), []).append(sample)
        return [_summarise(name, version, group) for (name, version), group in sorted(groups.items())]


def _summarise(name: str, version: int, samples: list[_Sample]) -> ModelTelemetry:
    latencies = sorted(s.latency_ms for s in samples if s.ok)
    return ModelTelemetry(
        name=name,
        version=version,
        requests=len(samples),
        errors=sum(1 for s in samples if not s.ok),
        p50_ms=percentile(latencies, 50) if latencies else None,
        p99_ms=percentile(latencies, 99) if latencies else None,
    )
