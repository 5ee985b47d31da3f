"""Self-test: run the model on its sample inputs and compare with the reference outputs.

The comparison is pure (numpy only). The artifact is one .npz with `input:NAME` and `output:NAME` arrays.
A model that fails here is never switched in.
"""

from __future__ import annotations

import threading
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_agent.core.errors import SelfTestError

# numpy reads each array's header with `ast.literal_eval`, and CPython 3.11 keeps the AST constructor's recursion
# depth in one per-interpreter counter: two threads parsing at once can raise "SystemError: AST constructor
# recursion depth mismatch" (python/cpython#106905; seen with the fleet simulator's apply threads). Reads of
# self-test cases take turns; each is a few small arrays.
_HEADERS = threading.Lock()


@dataclass(frozen=True)
class SelfTestCase:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


def load_case(path: Path) -> SelfTestCase:
    try:
        with _HEADERS, np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise SelfTestError(f"self-test artifact is not a readable .npz: {exc}") from exc
    inputs = {k.removeprefix("input:"): v for k, v in arrays.items() if k.startswith("input:")}
    outputs = {k.removeprefix("output:"): v for k, v in arrays.items() if k.startswith("output:")}
    if not inputs or not outputs:
        raise SelfTestError("self-test artifact needs at least one `input:NAME` and one `output:NAME` array")
    return SelfTestCase(inputs, outputs)


def compare(
    actual: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray], atol: float, rtol: float
) -> str | None:
    """None when every expected output matches within tolerance; else the first mismatch, described."""
    for name, want in expected.items():
        got = actual.get(name)
        if got is None:
            return f"model produced no output {name!r} (it has {sorted(actual)})"
        if got.shape != want.shape:
            return f"output {name!r} has shape {list(got.shape)}, reference has {list(want.shape)}"
        if not np.allclose(got, want, atol=atol, rtol=rtol, equal_nan=True):
            worst = float(np.max(np.abs(got.astype(np.float64) - want.astype(np.float64))))
            return f"output {name!r} differs from the reference by up to {worst:.6g} (atol={atol}, rtol={rtol})"
    return None
