"""The proof an artifact carries: parity figures against the fp32 source, and latency figures on the builder.

It exists so a builder and the control plane judge a candidate by one policy: the builder measures, and the
control plane re-applies the tolerances to the figures a (possibly remote) builder reported (`judge`).
Pure numpy; it must never run a model or read a clock (measurements come in as numbers).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import TypeAdapter, ValidationError

from edge_agent.protocol.validation import describe_error
from model_builds.protocol import BatchLatency, OutputParity, ParityReport, Tolerances

_OUTPUTS = TypeAdapter(list[OutputParity])

Array = npt.NDArray[np.generic]


def _figures(name: str, got: Array, want: Array) -> OutputParity:
    a = np.asarray(got, dtype=np.float64).ravel()
    b = np.asarray(want, dtype=np.float64).ravel()
    if a.size == 0:
        return OutputParity(name, 0.0, 0.0, 0.0, 1.0, None)
    if not np.all(np.isfinite(a)):
        return OutputParity(name, math.inf, math.inf, float(np.abs(b).max()), -1.0, None)
    max_abs = float(np.abs(a - b).max())
    scale = float(np.abs(b).max())
    norms = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b / norms) if norms > 0 else (1.0 if max_abs == 0 else 0.0)
    return OutputParity(name, max_abs, max_abs / scale if scale > 0 else max_abs, scale, cosine, _top1(got, want))


def _top1(got: Array, want: Array) -> float | None:
    """Agreement of the arg-max over the last axis, for (batch, classes) outputs."""
    if want.ndim != 2 or want.shape[-1] < 2:
        return None
    return float(np.mean(np.argmax(got, axis=-1) == np.argmax(want, axis=-1)))


def parity(candidate: Mapping[str, Array], reference: Mapping[str, Array], tolerances: Tolerances) -> ParityReport:
    """The candidate's outputs against the reference's, judged by `tolerances`."""
    outputs: list[OutputParity] = []
    reasons: list[str] = []
    for name, want in reference.items():
        got = candidate.get(name)
        if got is None:
            reasons.append(f"output {name!r}: the candidate does not produce it")
        elif got.shape != want.shape:
            reasons.append(f"output {name!r}: shape {list(got.shape)} != reference {list(want.shape)}")
        else:
            outputs.append(_figures(name, got, want))
    return _verdict(outputs, tolerances, reasons)


def judge(report: Mapping[str, Any], tolerances: Tolerances) -> ParityReport:
    """Re-apply `tolerances` to the figures of a reported parity dict (never trusting its `passed`)."""
    try:
        raw_outputs, raw_reasons = report["outputs"], report.get("reasons", [])
        if not isinstance(raw_outputs, list) or not all(isinstance(o, Mapping) for o in raw_outputs):
            raise TypeError("`outputs` must be a list of objects")
        if not isinstance(raw_reasons, list):
            raise TypeError("`reasons` must be a list")
        outputs = _OUTPUTS.validate_python(raw_outputs)
        carried = [str(r) for r in raw_reasons if str(r).startswith("output ") and "shape" in str(r)]
    except ValidationError as exc:
        why = describe_error(exc.errors()[0], root="outputs")
        return ParityReport((), tolerances, False, (f"the parity report is malformed: outputs.{why}",))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        return ParityReport((), tolerances, False, (f"the parity report is malformed: {exc}",))
    if not outputs and not carried:
        carried = ["the parity report has no outputs"]
    return _verdict(outputs, tolerances, carried)


def _verdict(outputs: Sequence[OutputParity], tol: Tolerances, reasons: list[str]) -> ParityReport:
    reasons = list(reasons)
    for o in outputs:
        bound = tol.atol + tol.rtol * o.reference_scale
        if not o.max_abs <= bound:
            reasons.append(
                f"output {o.name!r}: max abs error {o.max_abs:.4g} > {bound:.4g} "
                f"(atol {tol.atol:g} + rtol {tol.rtol:g} x reference scale {o.reference_scale:.4g})"
            )
        if not o.cosine >= tol.cosine:
            reasons.append(f"output {o.name!r}: cosine similarity {o.cosine:.6f} < {tol.cosine:g}")
        if tol.top1 is not None and o.top1_agreement is not None and not o.top1_agreement >= tol.top1:
            reasons.append(f"output {o.name!r}: top-1 agreement {o.top1_agreement:.3f} < {tol.top1:g}")
    return ParityReport(tuple(outputs), tol, not reasons, tuple(reasons))


def batch_latency(batch: int, durations_s: Sequence[float]) -> BatchLatency:
    """p50/p99 in milliseconds of measured run durations (seconds)."""
    if not durations_s:
        raise ValueError("no runs were measured")
    ms = np.asarray(durations_s, dtype=np.float64) * 1000.0
    return BatchLatency(batch, len(ms), float(np.percentile(ms, 50)), float(np.percentile(ms, 99)))
