"""The journal state in memory, kept equal to the journal on disk: each change is saved before it is seen.

Every piece of the core reads the state here and changes it only through `save`/`mark`, so the in-memory copy
can never be ahead of what a restarted agent would find. Must never hold runtime objects (runners, the serving
table): only what core.journal records.
"""

from __future__ import annotations

from typing import Any

from edge_agent.core.journal import ApplyStep, JournalState, PendingApply
from edge_agent.core.ports import JournalPort


class Ledger:
    def __init__(self, journal: JournalPort) -> None:
        self._journal = journal
        self._state = JournalState()

    @property
    def state(self) -> JournalState:
        return self._state

    def load(self) -> JournalState:
        """Read the journal again; the in-memory state becomes what is on disk."""
        self._state = self._journal.load()
        return self._state

    def save(self, state: JournalState) -> None:
        self._journal.save(state)
        self._state = state

    def update(self, **fields: Any) -> None:
        """Save the current state with `fields` replaced."""
        self.save(self._state.model_copy(update=fields))

    def mark(self, generation: int, step: ApplyStep, model: str | None) -> None:
        """Record that the apply of `generation` is about to run `step` (for `model`), keeping its attempt count."""
        pending = self._state.pending
        attempts = pending.attempts if pending is not None else 1
        self.update(pending=PendingApply(generation=generation, step=step, model=model, attempts=attempts))
