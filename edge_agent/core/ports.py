"""The ports the core is written against: the journal, the slot store, fetching artifacts, loading model runners,
the clock and the listeners told about events and changes.

Adapters implement these (the data directory's files, httpx, onnxruntime, paho); tests and the fleet simulator
pass fakes. `AgentPorts` groups one core's ports; `edge_agent.daemon.build_core` composes the real ones. Nothing
here may do I/O itself: these are shapes, not implementations.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

import numpy as np

from edge_agent.core.artifacts import Choice
from edge_agent.core.journal import JournalState
from edge_agent.core.tensors import TensorSpec
from edge_agent.protocol import ArtifactRef, DeviceEvent, ModelAssignment, RuntimeOptions, Verifier
from edge_agent.protocol.vocabulary import ArtifactKind

Clock = Callable[[], datetime]
EventSink = Callable[[DeviceEvent], None]
# Called after anything a report shows has changed (the journal state or what is served).
ChangeSink = Callable[[], None]


class ArtifactFetcher(Protocol):
    def fetch(self, artifact: ArtifactRef, dest: Path) -> None:
        """Leave the artifact's bytes at `dest`, resuming from `dest` + `.part` if it exists.

        Does not verify the digest (the core does); raises FetchError.
        """


class ModelRunner(Protocol):
    @property
    def provider(self) -> str: ...

    @property
    def inputs(self) -> Sequence[TensorSpec]: ...

    @property
    def outputs(self) -> Sequence[TensorSpec]: ...

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs by name; InferenceInputError for inputs the model cannot take, RunnerError otherwise."""


class RunnerFactory(Protocol):
    def load(self, path: Path, runtime: RuntimeOptions, kind: ArtifactKind = ArtifactKind.ONNX) -> ModelRunner:
        """A ready runner for the model file at `path` of artifact `kind`; RunnerError if it cannot be loaded."""


class JournalPort(Protocol):
    """Where the journal state lives between processes (core.journal.Journal: one atomically replaced file)."""

    def load(self) -> JournalState:
        """The saved state, or an empty one when none was ever saved; JournalError when unreadable."""

    def save(self, state: JournalState) -> None:
        """Replace the saved state so that a kill at any instant leaves the old or the new one; JournalError."""


class SlotStore(Protocol):
    """Staged downloads and one slot per installed artifact (core.store.Store: the data directory's files)."""

    def staged(self, artifact: ArtifactRef) -> Path:
        """Where a download of `artifact` is left (and resumed from)."""

    def holds(self, path: Path, artifact: ArtifactRef) -> bool:
        """`path` exists and holds exactly the artifact's bytes."""

    def mismatch(self, path: Path, artifact: ArtifactRef) -> str | None:
        """None when `path` holds exactly the artifact's bytes; else what differs."""

    def discard(self, path: Path) -> None:
        """Delete a staged file that must not be used (it did not verify)."""

    def slot_dir(self, name: str, slot: str) -> Path: ...

    def has_slot(self, name: str, slot: str) -> bool: ...

    def installed(self, model: ModelAssignment, choice: Choice) -> Path | None:
        """The slot of this artifact when it already holds both files, hashed now; else None."""

    def install(self, model: ModelAssignment, choice: Choice, model_file: Path, selftest_file: Path) -> Path:
        """The slot holding both files, never seen half-installed."""

    def remove_half_installed(self) -> None: ...

    def collect_garbage(self, keep: Iterable[tuple[str, str]], clear_staging: bool) -> None:
        """Delete slots not in `keep` ((model, slot) pairs); optionally empty staging."""


def drop_event(event: DeviceEvent) -> None:
    """No listener: events are only logged by whoever emits them."""


def ignore_change() -> None:
    """No listener for changes."""


@dataclass(frozen=True)
class AgentPorts:
    """Everything one core reaches the world through. `on_event` hears every step event; `on_change` is called
    when the reported state may have changed (the daemon publishes it)."""

    verifier: Verifier
    fetcher: ArtifactFetcher
    runners: RunnerFactory
    journal: JournalPort
    store: SlotStore
    clock: Clock
    on_event: EventSink = drop_event
    on_change: ChangeSink = ignore_change
