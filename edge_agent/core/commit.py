"""The decisions of a commit, the second half of an apply transaction. Purely computational.

Which slots become active and which stay as the previous ones (the instant rollback), what the serving table
holds after the switch, and how an activation is told. No I/O, no clock: the
transaction (core.transaction) saves, swaps and emits what these return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from edge_agent.core.journal import JournalState, SlotRecord
from edge_agent.core.prepare import Prepared
from edge_agent.core.reconcile import Decision
from edge_agent.core.serving_table import LoadedModel, ServedModel, TableSnapshot
from edge_agent.protocol import DesiredState, EventStep


@dataclass(frozen=True)
class Slots:
    """The journal's active and previous records after a commit."""

    active: dict[str, SlotRecord]
    previous: dict[str, SlotRecord]


def next_slots(old: JournalState, decision: Decision, installed: Sequence[SlotRecord]) -> Slots:
    """Kept and installed models are active; a replaced or removed model's record becomes its previous one, and
    a previous record is kept only while its model is still active."""
    replaced = [r.name for r in installed if r.name in old.active] + list(decision.remove)
    active = {name: old.active[name] for name in decision.keep} | {r.name: r for r in installed}
    previous = {n: r for n, r in old.previous.items() if n in active} | {n: old.active[n] for n in replaced}
    return Slots(active, {n: r for n, r in previous.items() if n in active})


def switched(
    current: TableSnapshot, desired: DesiredState, new: Mapping[str, LoadedModel], expected: frozenset[str]
) -> TableSnapshot:
    """The serving table after the switch: a new runner becomes active with the replaced one as its previous;
    a kept model is served as it was (a previous version still being restored stays so); a model the desired state
    no longer names is dropped."""
    models: dict[str, ServedModel] = {}
    for model in desired.models:
        served = current.models.get(model.name)
        if model.name in new:
            models[model.name] = ServedModel(new[model.name], served.active if served else None)
        elif served is not None:
            models[model.name] = served
    restoring = {name: v for name, v in current.restoring.items() if name in models and name not in new}
    return TableSnapshot(models, expected, restoring)


def activation(prepared: Prepared, before: SlotRecord | None) -> tuple[EventStep, str]:
    """Every commit is `activated`: the agent cannot tell an abort's restore from an operator rolling an older
    version forward again (both are a newer generation naming it), so whether it was a rollback is the rollout's
    word, never the device's. The reason says when the version came back from its previous slot (`before`: the
    previous record as it was before the commit) without a download."""
    model = prepared.model
    provider = f"provider {prepared.loaded.runner.provider}"
    if before is not None and before.version == model.version:
        source = f"its previous slot {prepared.record.slot}, no download" if prepared.restored else "a new download"
        return EventStep.ACTIVATED, f"v{model.version} again, from {source}; {provider}"
    return EventStep.ACTIVATED, provider
