"""The reconcile decision: given a verified desired state and the journal, what to do. Purely computational.

No I/O, no clock, no side effects: tests assert on the returned Decision.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum

from edge_agent.core.artifacts import Choice, Refusal, primary_choice
from edge_agent.core.journal import JournalState, SlotRecord
from edge_agent.protocol import DesiredState, ModelAssignment

# Which artifact of an assignment this device would run (core.artifacts.choose_artifact with its hardware bound).
Chooser = Callable[[ModelAssignment], Choice | Refusal]


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


def plan(desired: DesiredState, state: JournalState, device_id: str, choose: Chooser | None = None) -> Decision:
    """Reject documents for another device or an older generation; skip applied or failed ones; else diff.

    A model is kept when its installed artifact is the one `choose` picks for it now (default: the primary),
    so a device that fell back keeps its fallback, and one whose hardware now fits the plan installs the plan.
    """
    choose = choose or primary_choice
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
    install = tuple(m for m in desired.models if not _same(state.active.get(m.name), m, choose))
    keep = tuple(m.name for m in desired.models if _same(state.active.get(m.name), m, choose))
    wanted = {m.name for m in desired.models}
    remove = tuple(sorted(name for name in state.active if name not in wanted))
    return Decision(DecisionKind.APPLY, "", install, keep, remove)


def _same(record: SlotRecord | None, model: ModelAssignment, choose: Chooser) -> bool:
    if record is None or record.version != model.version:
        return False
    choice = choose(model)
    return (
        isinstance(choice, Choice)
        and record.build_id == choice.build_id
        and record.model_sha256 == choice.artifact.sha256
        and record.runtime == choice.runtime
    )
