"""The reconcile decision: given a verified desired state and the journal, what to do. Purely computational.

No I/O, no clock, no side effects: tests assert on the returned Decision.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from edge_agent.core.journal import JournalState, SlotRecord
from edge_agent.protocol import DesiredState, ModelAssignment


class DecisionKind(str, Enum):
    APPLY = "apply"
    NOOP = "noop"
    REJECT = "reject"


@dataclass(frozen=True)
class Decision:
    kind: DecisionKind
    reason: str = ""
    install: tuple[ModelAssignment, ...] = ()
    keep: tuple[str, ...] = ()
    remove: tuple[str, ...] = field(default=())


def plan(desired: DesiredState, state: JournalState, device_id: str) -> Decision:
    """Reject documents for another device or an older generation; skip applied or failed ones; else diff."""
    generation = desired.generation
    if desired.device_id != device_id:
        return Decision(DecisionKind.REJECT, f"document is for device {desired.device_id!r}, this is {device_id!r}")
    if generation < state.applied_generation:
        return Decision(
            DecisionKind.REJECT,
            f"generation {generation} is not above the applied generation {state.applied_generation}",
        )
    if generation == state.applied_generation:
        return Decision(DecisionKind.NOOP, f"generation {generation} is already applied")
    if generation <= state.failed_generation:
        return Decision(DecisionKind.NOOP, f"generation {generation} already failed; waiting for a newer generation")
    install = tuple(m for m in desired.models if not _same(state.active.get(m.name), m))
    keep = tuple(m.name for m in desired.models if _same(state.active.get(m.name), m))
    wanted = {m.name for m in desired.models}
    remove = tuple(sorted(name for name in state.active if name not in wanted))
    return Decision(DecisionKind.APPLY, "", install, keep, remove)


def _same(record: SlotRecord | None, model: ModelAssignment) -> bool:
    return (
        record is not None
        and record.version == model.version
        and record.build_id == model.build_id
        and record.model_sha256 == model.artifact.sha256
        and record.runtime == model.runtime
    )
