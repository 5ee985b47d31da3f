"""The apply transaction: begin (journal the document), prepare every model, then commit and switch, or fail.

A commit saves the new active and previous slots before the serving table is swapped, so a kill leaves either
the old or the new models serving. A failure at any step records the failed generation (never retried), says why
and leaves the previous models serving. A generation whose apply was interrupted too often is failed instead of
tried again. Must never verify a signature or decide what to install: core.agent and core.reconcile do.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from edge_agent.core.commit import activation, next_slots, switched
from edge_agent.core.context import CoreContext
from edge_agent.core.events import MAX_REASON
from edge_agent.core.garbage import collect_garbage
from edge_agent.core.journal import ApplyStep, JournalState, PendingApply
from edge_agent.core.prepare import Prepared, Preparer, StepFailure
from edge_agent.core.reconcile import Decision, DecisionKind
from edge_agent.protocol import ApplyOutcome, ApplyPhase, DesiredState, EventStep, SignedDesiredState

log = logging.getLogger(__name__)

# A generation whose apply was interrupted (killed) this many times is recorded as failed, not retried forever.
MAX_INTERRUPTED_ATTEMPTS = 3


@dataclass(frozen=True)
class ApplyResult:
    """What happened to one desired-state document."""

    outcome: DecisionKind
    generation: int
    ok: bool
    reason: str = ""


def attempts(state: JournalState, generation: int) -> int:
    """This try's number: one more than the journal's when the same generation was pending (interrupted)."""
    pending = state.pending
    return pending.attempts + 1 if pending is not None and pending.generation == generation else 1


def in_progress(generation: int, at: datetime) -> ApplyOutcome:
    return ApplyOutcome(generation=generation, phase=ApplyPhase.IN_PROGRESS, step=EventStep.RECEIVED, at=at)


def failed(generation: int, failure: StepFailure, at: datetime) -> ApplyOutcome:
    return ApplyOutcome(
        generation=generation, phase=ApplyPhase.FAILED, step=failure.step, reason=failure.reason[:MAX_REASON], at=at
    )


class ApplyTransaction:
    def __init__(self, context: CoreContext) -> None:
        self._ctx = context
        self._preparer = Preparer(context)

    def run(self, desired: DesiredState, signed: SignedDesiredState, decision: Decision) -> ApplyResult:
        """Apply `decision` (an APPLY) for `desired`; never raises for a model that fails, nor for anything that
        raises before the commit (a port's fault, a thread that could not start): that fails the generation with
        the exception's text, as the control plane then sees, rather than leaving it pending with nothing said."""
        generation = desired.generation
        tries = attempts(self._ctx.ledger.state, generation)
        self._begin(signed, generation, tries)
        if tries > MAX_INTERRUPTED_ATTEMPTS:
            return self._fail(generation, StepFailure(EventStep.ERROR, f"apply interrupted {tries - 1} times"))
        try:
            prepared = [self._preparer.prepare(generation, model) for model in decision.install]
        except StepFailure as failure:
            return self._fail(generation, failure)
        except Exception as exc:  # a port's fault or the core's own: the generation fails and says so, never hangs
            log.exception("generation %d: the apply raised", generation)  # pending with nothing reported
            return self._fail(generation, StepFailure(EventStep.ERROR, f"the apply raised {type(exc).__name__}: {exc}"))
        self._commit(desired, decision, prepared)
        return ApplyResult(DecisionKind.APPLY, generation, ok=True)

    def _begin(self, signed: SignedDesiredState, generation: int, tries: int) -> None:
        ctx = self._ctx
        pending = PendingApply(generation=generation, step=ApplyStep.RECEIVED, attempts=tries)
        ctx.ledger.update(desired=signed, pending=pending, last_apply=in_progress(generation, ctx.ports.clock()))
        ctx.events.emit(generation, EventStep.RECEIVED)
        ctx.ports.on_change()

    def _commit(self, desired: DesiredState, decision: Decision, prepared: list[Prepared]) -> None:
        ctx, generation = self._ctx, desired.generation
        ctx.ledger.mark(generation, ApplyStep.COMMIT, None)
        old = ctx.ledger.state
        slots = next_slots(old, decision, [p.record for p in prepared])
        outcome = ApplyOutcome(generation=generation, phase=ApplyPhase.SUCCEEDED, at=ctx.ports.clock())
        ctx.ledger.update(
            applied_generation=generation,
            active=slots.active,
            previous=slots.previous,
            pending=None,
            last_apply=outcome,
        )
        new = {p.model.name: p.loaded for p in prepared}
        ctx.table.swap(switched(ctx.table.current(), desired, new, frozenset(slots.active)))
        for p in prepared:
            step, reason = activation(p, old.previous.get(p.model.name))
            ctx.events.emit(generation, step, p.model, reason=reason)
        collect_garbage(ctx.ports.store, ctx.ledger.state, clear_staging=True)
        ctx.ports.on_change()

    def _fail(self, generation: int, failure: StepFailure) -> ApplyResult:
        ctx = self._ctx
        log.error("generation %d failed: %s", generation, failure.reason)
        outcome = failed(generation, failure, ctx.ports.clock())
        ctx.ledger.update(failed_generation=generation, pending=None, last_apply=outcome)
        ctx.events.emit(generation, failure.step, failure.model, reason=failure.reason)
        collect_garbage(ctx.ports.store, ctx.ledger.state, clear_staging=False)
        ctx.ports.on_change()
        return ApplyResult(DecisionKind.APPLY, generation, ok=False, reason=failure.reason)
