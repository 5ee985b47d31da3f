"""Run ONNX Runtime on an untrusted model in a child process, with a wall-clock timeout and a memory limit.

Why: an upload is code. A 261-byte ONNX `Loop` with a trip count of 2^62 runs forever, and a small graph can ask
for any amount of memory; neither may pin a core or the memory of the process that asked (the control plane's
upload path and its in-process builder). Every evaluation here runs in `python -m model_builds.ort_child` in a
private temp folder: the child limits its own memory (RLIMIT_AS; RLIMIT_DATA when a GPU provider is asked for,
whose driver reserves huge address ranges it never touches) before it imports onnxruntime, and it is killed, with
its whole process group, when the wall clock runs out.

This module must never import onnxruntime, never leave a child running, and never put a host path into an error
(the reasons it raises are shown to whoever uploaded the model).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from edge_agent.protocol.vocabulary import ExecutionProvider
from model_builds.errors import BuildError
from model_builds.npz import NpzLimits, read_npz
from model_builds.onnx_model import ModelSignature, TensorSpec

CPU = (ExecutionProvider.CPU.value,)
CPU_ONLY = frozenset(CPU)
MODEL_NAME = "model.onnx"
REQUEST = "request.json"
RESULT = "result.json"
INPUTS = "inputs.npz"
OUTPUTS = "outputs.npz"
STDERR = "stderr.txt"
RESULT_MODEL = "result.onnx"
_STDERR_TAIL = 4096
_OUT_OF_MEMORY = re.compile(
    r"bad_alloc|alloc failed|pthread_create failed|MemoryError|Failed to allocate|out of memory|Cannot allocate memory",
    re.I,
)

Arrays = dict[str, npt.NDArray[Any]]


class SandboxError(BuildError):
    """An evaluation in the sandbox did not produce outputs; `reason` says why, naming no host path."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SandboxTimeout(SandboxError):
    """The evaluation ran past its wall-clock limit and was killed."""


class SandboxOutOfMemory(SandboxError):
    """The evaluation needed more memory than its limit allows."""


class SandboxFailed(SandboxError):
    """ONNX Runtime refused or failed the model (or the child died); the reason is ONNX Runtime's, paths removed."""


@dataclass(frozen=True)
class EvalLimits:
    """Bounds of the sandboxed steps: `timeout_s` for one evaluation (and a model's inspection), `long_timeout_s`
    for a build's longer steps (graph optimisation, int8 calibration, the latency proof's timed runs)."""

    timeout_s: float = 30.0
    memory_bytes: int = 8 * 1024**3
    long_timeout_s: float = 600.0


def run_bounded(
    model: Path,
    inputs: Mapping[str, np.ndarray],
    *,
    timeout_s: float,
    memory_bytes: int,
    providers: Sequence[str] = CPU,
) -> dict[str, np.ndarray]:
    """The model's outputs on `inputs`, computed in a child killed after `timeout_s` or past `memory_bytes`."""
    with _Workdir(model) as work:
        _save(work.path / INPUTS, inputs)
        work.call({"op": "run", "providers": list(providers)}, timeout_s, memory_bytes, providers)
        return work.outputs(memory_bytes)


def inspect_bounded(model: Path, *, timeout_s: float, memory_bytes: int) -> ModelSignature:
    """`onnx_model.inspect_model` in the sandbox: parsing and checking a large or hostile file costs the child's
    memory, not ours. SandboxFailed carries InvalidModel's reason (what is wrong with the file)."""
    with _Workdir(model) as work:
        found = work.call({"op": "inspect"}, timeout_s, memory_bytes, CPU)
        return signature_from_dict(found["signature"])


def run_and_time_bounded(
    model: Path,
    feeds: Mapping[str, np.ndarray],
    feeds_by_batch: Mapping[int, Mapping[str, np.ndarray]],
    runs: int,
    *,
    timeout_s: float,
    memory_bytes: int,
    providers: Sequence[str] = CPU,
) -> tuple[dict[str, np.ndarray], str, dict[int, list[float]]]:
    """`ort_runtime.run_and_time` in the sandbox: (outputs on `feeds`, provider used, durations per batch size)."""
    with _Workdir(model) as work:
        _save(work.path / INPUTS, feeds)
        for batch, batch_feeds in feeds_by_batch.items():
            _save(work.path / f"batch-{int(batch)}.npz", batch_feeds)
        request = {
            "op": "run_and_time",
            "providers": list(providers),
            "batches": [int(b) for b in feeds_by_batch],
            "runs": int(runs),
        }
        result = work.call(request, timeout_s, memory_bytes, providers)
        durations = {int(b): [float(t) for t in times] for b, times in dict(result["durations"]).items()}
        return work.outputs(memory_bytes), str(result["provider"]), durations


def quantize_bounded(
    model: Path,
    destination: Path,
    calibration: Sequence[Mapping[str, np.ndarray]],
    *,
    timeout_s: float,
    memory_bytes: int,
) -> None:
    """`ort_quantize.quantize_qdq` in the sandbox (calibration runs the model); the result lands at `destination`."""
    with _Workdir(model) as work:
        for i, feeds in enumerate(calibration):
            _save(work.path / f"calibration-{i}.npz", feeds)
        work.call({"op": "quantize", "chunks": len(calibration)}, timeout_s, memory_bytes, CPU)
        shutil.move(work.path / RESULT_MODEL, destination)


def optimise_bounded(model: Path, destination: Path, level: str, *, timeout_s: float, memory_bytes: int) -> None:
    """`ort_runtime.optimise` in the sandbox (graph rewrites fold constants, which a hostile graph can inflate)."""
    with _Workdir(model) as work:
        work.call({"op": "optimise", "level": level}, timeout_s, memory_bytes, CPU)
        shutil.move(work.path / RESULT_MODEL, destination)


def fp16_bounded(model: Path, destination: Path, *, timeout_s: float, memory_bytes: int) -> None:
    """`fp16.convert_fp16` in the sandbox (the converter holds the whole model, twice, in memory)."""
    with _Workdir(model) as work:
        work.call({"op": "fp16"}, timeout_s, memory_bytes, CPU)
        shutil.move(work.path / RESULT_MODEL, destination)


def inline_bounded(
    model: Path, files: Mapping[str, Path], destination: Path, *, timeout_s: float, memory_bytes: int
) -> None:
    """`external_data.inline_external_data` in the sandbox: the model and its uploaded external data files (by the
    location the upload named them) become one self-contained model at `destination`. The child sees the files only
    as `data-N` links in its folder; a location is a key into that list, never a path it opens."""
    with _Workdir(model) as work:
        names: dict[str, str] = {}
        for i, (location, path) in enumerate(files.items()):
            names[location] = f"data-{i}"
            (work.path / names[location]).symlink_to(path.resolve())
        work.call({"op": "inline", "files": names}, timeout_s, memory_bytes, CPU)
        shutil.move(work.path / RESULT_MODEL, destination)


def signature_as_dict(signature: ModelSignature) -> dict[str, Any]:
    return asdict(signature)


def signature_from_dict(data: Mapping[str, Any]) -> ModelSignature:
    def specs(items: Any) -> tuple[TensorSpec, ...]:
        return tuple(TensorSpec(str(t["name"]), tuple(t["shape"]), str(t["dtype"])) for t in items)

    return ModelSignature(inputs=specs(data["inputs"]), outputs=specs(data["outputs"]), opset=int(data["opset"]))


def _save(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    with path.open("wb") as fh:
        np.savez(fh, **{name: np.asarray(value) for name, value in arrays.items()})  # type: ignore[arg-type]


def _limit_kind(providers: Sequence[str]) -> str:
    return "as" if set(providers) <= CPU_ONLY else "data"


def _child_env() -> dict[str, str]:
    package_root = str(Path(__file__).resolve().parents[1])
    path = os.environ.get("PYTHONPATH")
    return os.environ | {
        "PYTHONPATH": package_root if not path else f"{package_root}{os.pathsep}{path}",
        # glibc reserves 64 MiB of address space per thread arena; with RLIMIT_AS that is memory we cannot use.
        "MALLOC_ARENA_MAX": "2",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",  # the child needs no BLAS threads; each one costs address space
    }


class _Workdir:
    """A private temp folder holding a link to the model, the request, and the child's answer."""

    def __init__(self, model: Path) -> None:
        self._model = model
        self.path = Path(tempfile.mkdtemp(prefix="ort-sandbox-"))

    def __enter__(self) -> _Workdir:
        try:
            (self.path / MODEL_NAME).symlink_to(self._model.resolve())
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def call(
        self, request: dict[str, Any], timeout_s: float, memory_bytes: int, providers: Sequence[str]
    ) -> dict[str, Any]:
        (self.path / REQUEST).write_text(json.dumps(request))
        argv = [
            sys.executable,
            "-m",
            "model_builds.ort_child",
            str(self.path),
            str(int(memory_bytes)),
            _limit_kind(providers),
        ]
        with (self.path / STDERR).open("wb") as stderr:
            child = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                env=_child_env(),
                cwd=self.path,
                start_new_session=True,  # its own process group: a timeout kills every thread and helper it made
            )
            try:
                child.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                _kill(child)
                raise SandboxTimeout(f"model evaluation exceeded {timeout_s:g} s and was stopped") from None
            except BaseException:
                _kill(child)
                raise
        return self._answer(child.returncode, memory_bytes)

    def _answer(self, returncode: int, memory_bytes: int) -> dict[str, Any]:
        result_file = self.path / RESULT
        if result_file.is_file():
            result: dict[str, Any] = json.loads(result_file.read_text())
            if result.get("ok"):
                return result
            reason = self.scrub(str(result.get("reason") or "no reason given"))
            if result.get("kind") == "oom" or _OUT_OF_MEMORY.search(reason):
                raise _out_of_memory(memory_bytes)
            raise SandboxFailed(reason)
        tail = self._stderr_tail()
        if _OUT_OF_MEMORY.search(tail):
            raise _out_of_memory(memory_bytes)
        how = f"was killed by signal {-returncode}" if returncode < 0 else f"exited with status {returncode}"
        last = tail.strip().splitlines()[-1] if tail.strip() else "no output"
        raise SandboxFailed(f"model evaluation {how} ({self.scrub(last)[:500]})")

    def _stderr_tail(self) -> str:
        with (self.path / STDERR).open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - _STDERR_TAIL))
            return fh.read().decode(errors="replace")

    def scrub(self, text: str) -> str:
        """The child only ever sees its private folder; take every spelling of that, and the model's path, out."""
        for model in (self.path / MODEL_NAME, self._model.resolve(), self._model):
            text = text.replace(str(model), "the model")
        return text.replace(str(self.path) + os.sep, "").replace(str(self.path), "")

    def outputs(self, memory_bytes: int) -> Arrays:
        # The child wrote these within its memory limit; reading them back is bounded by the same figure.
        return read_npz(self.path / OUTPUTS, NpzLimits(max_total_bytes=memory_bytes, max_members=100_000))


def _out_of_memory(memory_bytes: int) -> SandboxOutOfMemory:
    return SandboxOutOfMemory(f"model evaluation needed more than its {memory_bytes / 2**20:.0f} MiB memory limit")


def _kill(child: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(child.pid, signal.SIGKILL)
    child.wait()
