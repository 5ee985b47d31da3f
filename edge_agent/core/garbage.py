"""Garbage collection of the data directory: every slot but the active and the previous ones goes.

Which slots are in use is decided here from the journal state (pure); the store deletes the rest. Must never be
run with a state that was not saved first, or a crash could leave the journal naming a deleted slot.
"""

from __future__ import annotations

from edge_agent.core.journal import JournalState
from edge_agent.core.ports import SlotStore


def slots_in_use(state: JournalState) -> list[tuple[str, str]]:
    """(model, slot) of every active and previous record: the instant rollback needs the previous on disk."""
    return [(r.name, r.slot) for r in (*state.active.values(), *state.previous.values())]


def collect_garbage(store: SlotStore, state: JournalState, clear_staging: bool) -> None:
    """Delete the slots `state` does not name; empty staging too after a success (`clear_staging`)."""
    store.collect_garbage(slots_in_use(state), clear_staging)
