"""The reported state: what this agent tells the control plane it serves. Purely computational.

Built from the agent's identity, the journal state and a snapshot of the serving table; no I/O, no clock.
Must never decide anything about an apply: it only describes.
"""

from __future__ import annotations

from edge_agent.core.context import AgentIdentity
from edge_agent.core.journal import JournalState, SlotRecord
from edge_agent.core.serving_table import ServedModel, TableSnapshot
from edge_agent.protocol import ApplyOutcome, ModelHealth, ModelStatus, ReportedState

NO_PROVIDER = "none"


def reported_state(
    identity: AgentIdentity,
    state: JournalState,
    snapshot: TableSnapshot,
    from_journal: bool = False,
    refused: ApplyOutcome | None = None,
) -> ReportedState:
    """What this agent serves. `from_journal`: for a one-shot process (`edge-agent apply`) that did not load
    every model itself, a model the journal holds as active counts as serving (the daemon serves it). `refused`:
    a document refused since the last apply, told as the last apply (failed at step `rejected`)."""
    served = snapshot.models
    models = [model_status(record, served.get(name), state, from_journal) for name, record in state.active.items()]
    return ReportedState(
        device_id=identity.device_id,
        agent_version=identity.agent_version,
        applied_generation=state.applied_generation,
        last_apply=refused or state.last_apply,
        models=models,
        hardware=identity.hardware,
        labels=dict(identity.labels),
        channel=identity.channel,
        serving_url=identity.serving_url,
    )


def model_status(
    record: SlotRecord, served: ServedModel | None, state: JournalState, from_journal: bool
) -> ModelStatus:
    """One active model: serving when its journaled version is the one loaded (or, `from_journal`, when this
    process loads nothing); the provider of the loaded runner, else the one journaled at its install."""
    loaded = served is not None and served.active.version == record.version
    running = loaded or (from_journal and served is None)
    previous = state.previous.get(record.name)
    return ModelStatus(
        name=record.name,
        version=record.version,
        build_id=record.build_id,
        active_slot=record.slot,
        provider=served.active.runner.provider if served is not None and loaded else (record.provider or NO_PROVIDER),
        health=ModelHealth.SERVING if running else ModelHealth.FAILED,
        previous_version=previous.version if previous else None,
        artifact_kind=record.artifact_kind,
        fallback_reason=record.fallback_reason,
    )
