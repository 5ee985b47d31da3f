"""Recovery from the journal: serve the last-known-good models at once, and find the apply a kill interrupted.

A fresh core on a data directory (after a reboot, a crash, or in a one-shot `edge-agent apply`) reads the journal,
drops half-installed slots, loads the journal's active models into the serving table and says which desired
document, if any, must be applied again. `refresh` picks up an apply another process did on the same directory, and
loads again the previous versions the journal keeps (the instant rollback, addressable at `/versions/{v}` as
before the restart): after the active ones, so a restart serves at once, and each once, so a slot that cannot load
is not retried. The table mirrors the journal: at most an active and a previous runner per model.
Whether to resume is a pure decision (`interrupted`); must never start an apply itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge_agent.core.artifacts import unfit
from edge_agent.core.context import CoreContext
from edge_agent.core.errors import RunnerError
from edge_agent.core.journal import JournalState, SlotRecord
from edge_agent.core.layout import MODEL_FILE
from edge_agent.core.serving_table import LoadedModel, ServedModel, TableSnapshot
from edge_agent.protocol import EventStep, SignedDesiredState

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Interrupted:
    """What the journal says about an apply that did not finish: resume `document`, or forget the pending step
    (`clear`), or neither (nothing was pending)."""

    document: SignedDesiredState | None = None
    clear: bool = False


def interrupted(state: JournalState) -> Interrupted:
    """A pending apply of a generation above the applied one is resumed; a stale pending step is cleared."""
    pending, desired = state.pending, state.desired
    if pending is None:
        return Interrupted()
    if desired is not None and pending.generation > state.applied_generation:
        return Interrupted(document=desired)
    return Interrupted(clear=True)


class Recovery:
    def __init__(self, context: CoreContext) -> None:
        self._ctx = context

    def recover(self, load_models: bool = True) -> SignedDesiredState | None:
        """Serve the journal's last-known-good models; return the desired doc of an interrupted apply, if any.

        `load_models=False` (a one-shot `edge-agent apply`) reads the journal without loading runners.
        """
        ledger = self._ctx.ledger
        ledger.load()
        self._ctx.ports.store.remove_half_installed()
        if load_models:
            self.load_active()
        pending, found = ledger.state.pending, interrupted(ledger.state)
        if found.document is not None and pending is not None:
            log.info("generation %d was interrupted at step %s; resuming", pending.generation, pending.step.value)
        if found.clear:
            ledger.update(pending=None)
        self._ctx.ports.on_change()
        return found.document

    def refresh(self) -> bool:
        """Pick up an apply done by another process (`edge-agent apply`), then load the previous versions still
        being restored; True when the active models changed."""
        before = self._ctx.ledger.state
        on_disk = self._ctx.ledger.load()
        changed = on_disk.applied_generation != before.applied_generation or on_disk.active != before.active
        if changed:
            self.load_active()
        self.load_previous()
        if changed:
            self._ctx.ports.on_change()
        return changed

    def load_active(self) -> None:
        """Serve the journal's active models, keeping a runner already loaded for the same build (as active or as
        previous); a previous version not in memory is marked `restoring`, for `load_previous`."""
        state = self._ctx.ledger.state
        current = self._ctx.table.current().models
        models: dict[str, ServedModel] = {}
        restoring: dict[str, int] = {}
        for name, record in state.active.items():
            active = in_memory(current.get(name), record) or self._load_record(record)
            if active is None:
                continue
            before = state.previous.get(name)
            previous = in_memory(current.get(name), before) if before is not None else None
            if before is not None and previous is None:
                restoring[name] = before.version
            models[name] = ServedModel(active, previous)
        self._ctx.table.swap(TableSnapshot(models, frozenset(state.active), restoring))

    def load_previous(self) -> None:
        """Load the previous versions marked `restoring`, each tried once: one that cannot load is logged, not
        retried, and its version stays unaddressable (a rollback to it then loads it from its slot again)."""
        snapshot = self._ctx.table.current()
        if not snapshot.restoring:
            return
        previous = self._ctx.ledger.state.previous
        models = dict(snapshot.models)
        for name, version in snapshot.restoring.items():
            record, served = previous.get(name), models.get(name)
            if record is None or served is None or record.version != version:
                continue
            loaded = self._load_record(record, report=False)
            if loaded is not None:
                models[name] = ServedModel(served.active, loaded)
                log.info("previous version %s v%d loaded again (addressable, and kept for a rollback)", name, version)
        self._ctx.table.swap(TableSnapshot(models, snapshot.expected))

    def _load_record(self, record: SlotRecord, report: bool = True) -> LoadedModel | None:
        """The record's slot loaded, or None; `report`: a failure is also an event (the active model's is; the
        previous one's only concerns a later rollback, which reports its own)."""
        ctx = self._ctx
        path = ctx.ports.store.slot_dir(record.name, record.slot) / MODEL_FILE
        identity = ctx.identity
        stale = unfit(
            record.artifact_kind, record.build_id, record.hardware_key, identity.hardware, identity.has_tensorrt_ep
        )
        if stale is not None:  # e.g. TensorRT was upgraded since the plan was installed: never deserialise it
            log.error("not loading %s v%d: %s", record.name, record.version, stale)
            self._report(record, stale, report)
            return None
        try:
            runner = ctx.ports.runners.load(path, record.runtime, record.artifact_kind)
        except RunnerError as exc:
            log.error("cannot load %s v%d from %s: %s", record.name, record.version, path, exc)
            self._report(record, str(exc), report)
            return None
        return LoadedModel(record.name, record.version, record.build_id, runner)

    def _report(self, record: SlotRecord, reason: str, report: bool) -> None:
        if report:
            ctx = self._ctx
            ctx.events.emit(ctx.ledger.state.applied_generation, EventStep.ERROR, reason=f"{record.name}: {reason}")


def in_memory(served: ServedModel | None, record: SlotRecord) -> LoadedModel | None:
    """The runner already loaded for exactly this record's build, active or previous, or None. Pure."""
    for loaded in (served.active, served.previous) if served is not None else ():
        if loaded is not None and (loaded.version, loaded.build_id) == (record.version, record.build_id):
            return loaded
    return None
