"""The simulated ports one simulated device's `AgentCore` runs over: memory instead of a data directory, a shared
artifact cache instead of HTTP downloads, and a runtime that answers the self-test instead of onnxruntime.

These implement the core's ports (edge_agent.core.ports) honestly: the core still hashes every "downloaded" byte
against the signed sha256 and size, still loads the self-test case from a real `.npz` file and compares the
runner's answer with its reference outputs, and still journals every step. What is simulated is only the
expensive, per-host part: bytes are fetched from the control plane once per artifact and shared by every device
(never copied per device), a slot's files exist once on disk for the whole fleet, and the "model" answers the
self-test's inputs with the reference outputs (or, for a device told to fail, with wrong ones). Faults (slow or
cut downloads, failing self-tests) come from the `DeviceFaults` each port is given.

Must never be used by the product: this is a load generator's stand-in for a device's disk, network and GPU.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import numpy as np

from edge_agent.core.artifacts import Choice
from edge_agent.core.errors import FetchError, RunnerError
from edge_agent.core.journal import JournalState
from edge_agent.core.layout import MODEL_FILE, SELFTEST_FILE, slot_name
from edge_agent.core.ports import ModelRunner
from edge_agent.core.selftest import SelfTestCase, load_case
from edge_agent.core.tensors import TensorSpec, v2_datatype
from edge_agent.protocol import ArtifactRef, ModelAssignment, RuntimeOptions
from edge_agent.protocol.vocabulary import ArtifactKind, ExecutionProvider

# An artifact larger than this is refused by the cache: the simulator shares bytes in memory across the fleet.
MAX_ARTIFACT_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class DeviceFaults:
    """What goes wrong on one device (decided once per device by the fleet's FaultPlan)."""

    fail_self_test: bool = False
    cut_download: bool = False
    slow_download_s: float = 0.0
    download_delay_s: float = 0.0  # the apply delay: how long a (healthy) download takes


class ArtifactCache:
    """Each artifact's bytes, fetched once from the control plane with a token and shared by every device.

    The slot files every device "installs" are written once under `root` (`{model}/{slot}/model.onnx`,
    `selftest.npz`), so the core's self-test reads a real file."""

    def __init__(self, root: Path, token: str | None, verify: bool | str = True) -> None:
        self.root = root
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._verify = verify
        self._bytes: dict[str, bytes] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def get(self, artifact: ArtifactRef) -> bytes:
        """The artifact's bytes as served (not verified here: the core verifies what it is handed)."""
        with self._lock:
            lock = self._locks.setdefault(artifact.sha256, threading.Lock())
        with lock:
            data = self._bytes.get(artifact.sha256)
            if data is None:
                data = self._download(artifact)
                self._bytes[artifact.sha256] = data
            return data

    def _download(self, artifact: ArtifactRef) -> bytes:
        if artifact.size > MAX_ARTIFACT_BYTES:
            raise FetchError(f"artifact of {artifact.size} bytes is over the simulator's {MAX_ARTIFACT_BYTES}")
        try:
            answer = httpx.get(artifact.url, headers=self._headers, timeout=60, verify=self._verify)
        except httpx.HTTPError as exc:
            raise FetchError(f"GET {artifact.url}: {exc}") from exc
        if answer.status_code != 200:
            raise FetchError(f"GET {artifact.url}: HTTP {answer.status_code}")
        self.fetches += 1
        return answer.content[:MAX_ARTIFACT_BYTES]

    def slot_dir(self, name: str, slot: str) -> Path:
        return self.root / "slots" / name / slot

    def materialise(self, name: str, slot: str, model: bytes, selftest: bytes) -> Path:
        """The shared slot directory holding both files (written once, atomically)."""
        final = self.slot_dir(name, slot)
        with self._lock:
            if not (final / SELFTEST_FILE).exists():
                tmp = final.with_name(final.name + ".tmp")
                tmp.mkdir(parents=True, exist_ok=True)
                (tmp / MODEL_FILE).write_bytes(model)
                (tmp / SELFTEST_FILE).write_bytes(selftest)
                tmp.replace(final)
        return final


def mismatch_of(data: bytes | None, artifact: ArtifactRef) -> str | None:
    """What the core's Store.mismatch says, over bytes held in memory."""
    if data is None:
        return "no such file"
    if len(data) != artifact.size:
        return f"size {len(data)} bytes, expected {artifact.size}"
    digest = hashlib.sha256(data).hexdigest()
    if digest != artifact.sha256:
        return f"sha256 {digest}, expected {artifact.sha256}"
    return None


class MemoryJournal:
    """The JournalPort in memory: a save replaces the state at once (no process can be killed mid-write here)."""

    def __init__(self) -> None:
        self._state = JournalState()

    def load(self) -> JournalState:
        return self._state

    def save(self, state: JournalState) -> None:
        self._state = state


class MemoryStore:
    """The SlotStore of one simulated device: staged files and slots as bytes in memory (shared objects, never
    copied); a slot's directory is the fleet's shared one, so the core reads the same files it would on a disk."""

    def __init__(self, device_id: str, cache: ArtifactCache) -> None:
        self._cache = cache
        self._staging_root = Path("/simulated") / device_id / "staging"
        self.files: dict[Path, bytes] = {}
        self._slots: dict[tuple[str, str], tuple[bytes, bytes]] = {}

    def staged(self, artifact: ArtifactRef) -> Path:
        return self._staging_root / artifact.sha256

    def holds(self, path: Path, artifact: ArtifactRef) -> bool:
        return path in self.files and mismatch_of(self.files[path], artifact) is None

    def mismatch(self, path: Path, artifact: ArtifactRef) -> str | None:
        return mismatch_of(self.files.get(path), artifact)

    def discard(self, path: Path) -> None:
        self.files.pop(path, None)

    def slot_dir(self, name: str, slot: str) -> Path:
        return self._cache.slot_dir(name, slot)

    def has_slot(self, name: str, slot: str) -> bool:
        return (name, slot) in self._slots

    def installed(self, model: ModelAssignment, choice: Choice) -> Path | None:
        slot = slot_name(model, choice)
        held = self._slots.get((model.name, slot))
        if held is None:
            return None
        if mismatch_of(held[0], choice.artifact) or mismatch_of(held[1], model.selftest.artifact):
            return None
        return self.slot_dir(model.name, slot)

    def install(self, model: ModelAssignment, choice: Choice, model_file: Path, selftest_file: Path) -> Path:
        slot = slot_name(model, choice)
        files = (self.files[model_file], self.files[selftest_file])
        self._slots[(model.name, slot)] = files
        return self._cache.materialise(model.name, slot, *files)

    def remove_half_installed(self) -> None:
        """Nothing to do: an install here is one dictionary assignment."""

    def collect_garbage(self, keep: Iterable[tuple[str, str]], clear_staging: bool) -> None:
        wanted = set(keep)
        self._slots = {key: files for key, files in self._slots.items() if key in wanted}
        if clear_staging:
            self.files.clear()


class SimulatedFetcher:
    """An ArtifactFetcher that "downloads" from the shared cache in `download_delay_s` (plus `slow_download_s` for
    a slow device); a device whose downloads are cut gets half the bytes in `.part` and a FetchError."""

    def __init__(self, store: MemoryStore, cache: ArtifactCache, faults: Callable[[], DeviceFaults]) -> None:
        self._store = store
        self._cache = cache
        self._faults = faults

    def fetch(self, artifact: ArtifactRef, dest: Path) -> None:
        faults = self._faults()
        data = self._cache.get(artifact)
        delay = faults.download_delay_s + faults.slow_download_s
        if delay > 0:
            time.sleep(delay)  # the transfer time: only this device's apply waits
        if faults.cut_download:
            self._store.files[dest.with_name(dest.name + ".part")] = data[: len(data) // 2]
            raise FetchError(f"connection cut after {len(data) // 2} of {len(data)} bytes (simulated fault)")
        self._store.files[dest] = data


class SimulatedRunner:
    """A "model" that answers the self-test's inputs with its reference outputs (wrong ones when `wrong`), and
    any other input of the right shape with zeros (the warm-up)."""

    def __init__(self, case: SelfTestCase, wrong: bool) -> None:
        self._case = case
        self._wrong = wrong
        self._inputs = [_spec(name, array) for name, array in case.inputs.items()]
        self._outputs = [_spec(name, array) for name, array in case.outputs.items()]

    @property
    def provider(self) -> str:
        return ExecutionProvider.CPU.value

    @property
    def inputs(self) -> Sequence[TensorSpec]:
        return self._inputs

    @property
    def outputs(self) -> Sequence[TensorSpec]:
        return self._outputs

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        case = self._case.inputs
        reference = all(name in feeds and np.array_equal(feeds[name], array) for name, array in case.items())
        if not reference:
            return {name: np.zeros_like(array) for name, array in self._case.outputs.items()}
        if self._wrong:
            return {name: array + 1.0 for name, array in self._case.outputs.items()}
        return dict(self._case.outputs)


def _spec(name: str, array: np.ndarray) -> TensorSpec:
    return TensorSpec(name, v2_datatype(array.dtype), (-1, *array.shape[1:]))


class SimulatedRunnerFactory:
    """The RunnerFactory: loads a slot's self-test case (read once per slot for the whole fleet) as the model."""

    _cases: dict[Path, SelfTestCase] = {}
    _lock = threading.Lock()

    def __init__(self, faults: Callable[[], DeviceFaults]) -> None:
        self._faults = faults

    def load(self, path: Path, runtime: RuntimeOptions, kind: ArtifactKind = ArtifactKind.ONNX) -> ModelRunner:
        if not path.exists():
            raise RunnerError(f"no model file at {path}")
        case_file = path.with_name(SELFTEST_FILE)
        with self._lock:
            case = self._cases.get(case_file)
        if case is None:
            case = load_case(case_file)
            with self._lock:
                self._cases[case_file] = case
        return SimulatedRunner(case, wrong=self._faults().fail_self_test)
