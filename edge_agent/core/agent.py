"""The agent core: the one object the daemon and `edge-agent apply` drive. A thin facade over its pieces.

`handle` verifies a signed desired state, decides (core.reconcile) and runs the apply transaction
(core.transaction: prepare in core.prepare, commit in core.commit); `recover` and `refresh_from_disk` serve what
the journal holds (core.recovery); `reported` describes it (core.reporting). Every step is journaled before it
starts, so a fresh core on the same data directory can tell where a killed one stopped: it serves the
last-known-good models at once and resumes the unfinished generation. A failure at any step leaves the previous
models serving. Calls are serialised by one lock. Must never construct its own ports or call a network, file or
runtime library directly: the journal, the store, the fetcher and the runners come in as ports (core.ports),
composed by `edge_agent.daemon.build_core`.
"""

from __future__ import annotations

import json
import logging
import threading

from edge_agent.core.context import AgentIdentity, CoreContext
from edge_agent.core.deadlines import Deadlines
from edge_agent.core.events import MAX_REASON, EventEmitter
from edge_agent.core.journal import JournalState
from edge_agent.core.ledger import Ledger
from edge_agent.core.ports import AgentPorts
from edge_agent.core.reconcile import DecisionKind, plan
from edge_agent.core.recovery import Recovery
from edge_agent.core.reporting import reported_state
from edge_agent.core.serving_table import ServingTable
from edge_agent.core.transaction import ApplyResult, ApplyTransaction
from edge_agent.protocol import (
    ApplyOutcome,
    ApplyPhase,
    EventStep,
    ReportedState,
    SignatureError,
    SignedDesiredState,
)

log = logging.getLogger(__name__)


class AgentCore:
    def __init__(self, identity: AgentIdentity, ports: AgentPorts, deadlines: Deadlines | None = None) -> None:
        self.identity = identity
        self.table = ServingTable()
        self._ctx = CoreContext(
            identity=identity,
            ports=ports,
            deadlines=deadlines or Deadlines(),
            ledger=Ledger(ports.journal),
            table=self.table,
            events=EventEmitter(ports.on_event, ports.clock),
        )
        self._recovery = Recovery(self._ctx)
        self._transaction = ApplyTransaction(self._ctx)
        self._lock = threading.RLock()
        self._refused: ApplyOutcome | None = None  # the latest refused document of this device, until an apply

    @property
    def state(self) -> JournalState:
        return self._ctx.ledger.state

    def recover(self, load_models: bool = True) -> SignedDesiredState | None:
        """Serve the journal's last-known-good models; return the desired doc of an interrupted apply, if any.

        `load_models=False` (a one-shot `edge-agent apply`) reads the journal without loading runners.
        """
        with self._lock:
            return self._recovery.recover(load_models)

    def refresh_from_disk(self) -> bool:
        """Pick up an apply done by another process (`edge-agent apply`); True when serving changed."""
        with self._lock:
            return self._recovery.refresh()

    def handle(self, signed: SignedDesiredState) -> ApplyResult:
        """Verify, decide, and apply one signed desired state. Never raises for a bad document or model."""
        with self._lock:
            try:
                desired = self._ctx.ports.verifier.verify_desired(signed)
            except SignatureError as exc:
                return self._reject(claimed_generation(signed, self.identity.device_id), f"signature: {exc}")
            decision = plan(desired, self.state, self.identity.device_id, self.identity.choose)
            if decision.kind is DecisionKind.REJECT:
                mine = desired.device_id == self.identity.device_id
                return self._reject(desired.generation if mine else 0, decision.reason)
            if decision.kind is DecisionKind.NOOP:
                log.info("desired state ignored: %s", decision.reason)
                return ApplyResult(DecisionKind.NOOP, desired.generation, ok=True, reason=decision.reason)
            self._refused = None  # a document that verified: its apply's outcome is what the report says now
            return self._transaction.run(desired, signed, decision)

    def report_rejected(self, generation: int, reason: str) -> None:
        """Tell the control plane about a message refused before it reached the core (e.g. malformed)."""
        self._ctx.events.emit(generation, EventStep.REJECTED, reason=reason)

    def reported(self, from_journal: bool = False) -> ReportedState:
        """What this agent serves. `from_journal`: for a one-shot process (`edge-agent apply`) that did not load
        every model itself, a model the journal holds as active counts as serving (the daemon serves it)."""
        return reported_state(self.identity, self.state, self.table.current(), from_journal, self._refused)

    def _reject(self, generation: int, reason: str) -> ApplyResult:
        """Refuse a document: an event says why, and, when it names a generation of this device, so does the
        reported state (`last_apply` failed at step `rejected`) until the next apply: the control plane's rollout
        counts the refusal as that device's failure at once instead of waiting for its deadline. Nothing of a
        refused document is stored (the journal is untouched; a restarted agent refuses the retained one again)."""
        log.warning("desired state rejected: %s", reason)
        ctx = self._ctx
        ctx.events.emit(generation, EventStep.REJECTED, reason=reason)
        if generation > 0:
            self._refused = ApplyOutcome(
                generation=generation,
                phase=ApplyPhase.FAILED,
                step=EventStep.REJECTED,
                reason=reason[:MAX_REASON],
                at=ctx.ports.clock(),
            )
            ctx.ports.on_change()
        return ApplyResult(DecisionKind.REJECT, generation, ok=False, reason=reason)


MAX_GENERATION = 2**53


def claimed_generation(signed: SignedDesiredState, device_id: str) -> int:
    """The generation a document that did not verify says it is, when it names this device (else 0): only used to
    tell the control plane which of its documents was refused; nothing in it is trusted or applied."""
    try:
        document = json.loads(signed.document)
    except ValueError:
        return 0
    if not isinstance(document, dict) or document.get("device_id") != device_id:
        return 0
    generation = document.get("generation")
    if isinstance(generation, bool) or not isinstance(generation, int) or not 0 < generation <= MAX_GENERATION:
        return 0
    return generation
