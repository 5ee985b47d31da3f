"""Per-model request counts, errors and latency percentiles over a sliding window. Pure: time is passed in.

Thread-safe (serving threads record, the telemetry thread reads); holds no clock of its own.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from dataclasses import dataclass

from edge_agent.protocol import ModelTelemetry


@dataclass(frozen=True)
class _Sample:
    at: float
    name: str
    version: int
    latency_ms: float
    ok: bool


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (q in 0..100)."""
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


class RequestWindow:
    def __init__(self, window_s: float, max_samples: int = 100_000) -> None:
        self.window_s = window_s
        self._samples: deque[_Sample] = deque(maxlen=max_samples)
        self._lock = threading.Lock()

    def record(self, now: float, name: str, version: int, latency_ms: float, ok: bool) -> None:
        with self._lock:
            self._samples.append(_Sample(now, name, version, latency_ms, ok))

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
