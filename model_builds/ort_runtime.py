"""The one place the build toolchain talks to ONNX Runtime: run a model, optimise a graph, report versions.

It must never be imported for its side effects elsewhere: onnxruntime is heavy and optional on some hosts.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from enum import Enum
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_agent.protocol.vocabulary import ExecutionProvider


class RuntimeFailure(RuntimeError):
    """ONNX Runtime could not load or run a model; the text is ONNX Runtime's reason."""


class OptimizationLevel(str, Enum):
    BASIC = "basic"
    EXTENDED = "extended"


_LEVELS = {
    OptimizationLevel.BASIC: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    OptimizationLevel.EXTENDED: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def version() -> str:
    return str(ort.__version__)


Feeds = Mapping[str, npt.NDArray[np.generic]]
Outputs = dict[str, npt.NDArray[np.generic]]
CPU = (ExecutionProvider.CPU.value,)


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


def _session(
    path: Path, options: ort.SessionOptions | None = None, providers: Sequence[str] = CPU
) -> ort.InferenceSession:
    missing = [p for p in providers if p not in ort.get_available_providers()]
    if missing:
        raise RuntimeFailure(f"onnxruntime {version()} on this host has no {missing} (it has {available_providers()})")
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own untyped exceptions
        raise RuntimeFailure(f"onnxruntime cannot load the model: {exc}") from exc


def _run(session: ort.InferenceSession, feeds: Feeds) -> Outputs:
    names = [o.name for o in session.get_outputs()]
    try:
        values = session.run(names, dict(feeds))
    except Exception as exc:
        raise RuntimeFailure(f"onnxruntime cannot run the model on the samples: {exc}") from exc
    return {name: np.asarray(value) for name, value in zip(names, values, strict=True)}


def run(path: Path, feeds: Feeds, providers: Sequence[str] = CPU) -> Outputs:
    """Run the model once (on CPU unless told otherwise); outputs by name."""
    return _run(_session(path, providers=providers), feeds)


def run_and_time(
    path: Path,
    feeds: Feeds,
    feeds_by_batch: Mapping[int, Feeds],
    runs: int,
    clock: Callable[[], float],
    providers: Sequence[str] = CPU,
) -> tuple[Outputs, str, dict[int, list[float]]]:
    """One session: its outputs on `feeds`, then `time_runs` on it (loading a model twice costs more than a build)."""
    session = _session(path, providers=providers)
    outputs = _run(session, feeds)
    provider, durations = time_runs(session, feeds_by_batch, runs, clock)
    return outputs, provider, durations


def time_runs(
    session: ort.InferenceSession,
    feeds_by_batch: Mapping[int, Feeds],
    runs: int,
    clock: Callable[[], float],
    warmup: int = 3,
) -> tuple[str, dict[int, list[float]]]:
    """(provider that runs it, per batch size the durations in seconds of `runs` timed runs after a warm-up)."""
    durations: dict[int, list[float]] = {}
    for batch, feeds in feeds_by_batch.items():
        for _ in range(warmup):
            _run(session, feeds)
        times: list[float] = []
        for _ in range(runs):
            start = clock()
            _run(session, feeds)
            times.append(clock() - start)
        durations[batch] = times
    return str(session.get_providers()[0]), durations


def optimise(source: Path, destination: Path, level: OptimizationLevel) -> None:
    """Write the graph optimised to a portable level (never ENABLE_ALL: that bakes in hardware-specific ops)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[level]
    options.optimized_model_filepath = str(destination)
    _session(source, options)
    if not destination.is_file():
        raise RuntimeFailure("onnxruntime did not write the optimised model")
