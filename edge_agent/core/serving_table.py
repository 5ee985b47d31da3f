"""What is being served right now: an immutable snapshot behind one reference, swapped atomically.

A request takes the snapshot once and finishes on the runner it found, so a switch never fails an in-flight
request; the previous version stays loaded (and addressable by version) until the next successful switch. After a
restart the active versions are served first; the previous ones are `restoring` until they are loaded again.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field

from edge_agent.core.ports import ModelRunner


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: int
    build_id: str
    runner: ModelRunner


@dataclass(frozen=True)
class ServedModel:
    active: LoadedModel
    previous: LoadedModel | None = None

    def by_version(self, version: int) -> LoadedModel | None:
        for candidate in (self.active, self.previous):
            if candidate is not None and candidate.version == version:
                return candidate
        return None


@dataclass(frozen=True)
class TableSnapshot:
    models: Mapping[str, ServedModel] = field(default_factory=dict)
    # Names the journal says are active: ready only when every one of them is loaded.
    expected: frozenset[str] = frozenset()
    # Model name -> its previous version, on disk and being loaded again after a restart (not addressable yet).
    restoring: Mapping[str, int] = field(default_factory=dict)

    @property
    def ready(self) -> bool:
        return self.expected <= set(self.models)


class ServingTable:
    def __init__(self) -> None:
        self._snapshot = TableSnapshot()
        self._write_lock = threading.Lock()

    def current(self) -> TableSnapshot:
        return self._snapshot

    def swap(self, snapshot: TableSnapshot) -> TableSnapshot:
        """Install `snapshot`; returns the one it replaced. Readers see either, never a mix."""
        with self._write_lock:
            old, self._snapshot = self._snapshot, snapshot
        return old
