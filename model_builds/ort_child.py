"""The child side of `model_builds.ort_sandbox`: one ONNX Runtime call on files in a private folder, then exit.

Run only as `python -m model_builds.ort_child WORKDIR MEMORY_BYTES as|data`. It limits its own memory before it
imports onnxruntime (so the limit covers every allocation of the evaluation) and answers in WORKDIR/result.json:
`{"ok": true, ...}` or `{"ok": false, "kind": "oom"|"failed", "reason": ...}`. It must never read or write outside
WORKDIR, and never be imported by the process that asked (the point is that the evaluation can be killed).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

_LIMITS = {"as": resource.RLIMIT_AS, "data": resource.RLIMIT_DATA}


def _limit_memory(limit_bytes: int, kind: str) -> None:
    which = _LIMITS[kind]
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        limit_bytes = min(limit_bytes, hard)
    resource.setrlimit(which, (limit_bytes, limit_bytes))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    # No file it writes (outputs, a rewritten model, its log) may be larger than its memory could hold.
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))


def _answer(workdir: Path, answer: dict[str, Any]) -> None:
    (workdir / "result.json").write_text(json.dumps(answer))


def _evaluate(workdir: Path, request: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from model_builds.npz import NpzLimits, read_npz

    # Our own parent wrote these files: the generous bound only guards against a bug, not an attacker.
    trusted = NpzLimits(max_total_bytes=1 << 62, max_members=1 << 20)
    model = workdir / "model.onnx"
    result_model = workdir / "result.onnx"
    op = request["op"]
    if op == "inspect":
        from model_builds.onnx_model import inspect_model
        from model_builds.ort_sandbox import signature_as_dict

        return {"signature": signature_as_dict(inspect_model(model))}
    if op == "inline":
        from model_builds.external_data import inline_external_data

        files = {str(location): workdir / str(name) for location, name in dict(request["files"]).items()}
        inline_external_data(model, files, result_model)
        return {}
    if op == "fp16":
        from model_builds import fp16

        fp16.convert_fp16(model, result_model)
        return {}

    from model_builds import ort_runtime

    providers = tuple(request.get("providers") or ort_runtime.CPU)
    if op == "run":
        outputs = ort_runtime.run(model, read_npz(workdir / "inputs.npz", trusted), providers)
        np.savez(workdir / "outputs.npz", **outputs)  # type: ignore[arg-type]
        return {}
    if op == "run_and_time":
        feeds = read_npz(workdir / "inputs.npz", trusted)
        by_batch = {int(b): read_npz(workdir / f"batch-{int(b)}.npz", trusted) for b in request["batches"]}
        outputs, provider, durations = ort_runtime.run_and_time(
            model, feeds, by_batch, int(request["runs"]), time.perf_counter, providers
        )
        np.savez(workdir / "outputs.npz", **outputs)  # type: ignore[arg-type]
        return {"provider": provider, "durations": {str(b): d for b, d in durations.items()}}
    if op == "optimise":
        ort_runtime.optimise(model, result_model, ort_runtime.OptimizationLevel(request["level"]))
        return {}
    if op == "quantize":
        from model_builds import ort_quantize

        chunks = [read_npz(workdir / f"calibration-{i}.npz", trusted) for i in range(int(request["chunks"]))]
        ort_quantize.quantize_qdq(model, result_model, chunks)
        return {}
    raise ValueError(f"unknown sandbox operation {op!r}")


def main(argv: list[str]) -> int:
    workdir, limit, kind = Path(argv[1]), int(argv[2]), argv[3]
    _limit_memory(limit, kind)
    try:
        request = json.loads((workdir / "request.json").read_text())
        answer = _evaluate(workdir, request)
    except MemoryError:
        _answer(workdir, {"ok": False, "kind": "oom", "reason": "out of memory"})
        return 3
    except Exception as exc:  # every library failure is the evaluation's outcome, reported to the parent
        _answer(workdir, {"ok": False, "kind": "failed", "reason": str(exc) or type(exc).__name__})
        return 2
    _answer(workdir, {"ok": True} | answer)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
