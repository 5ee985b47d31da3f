"""Who this agent is, and what the pieces of one core share (its ports, the journal state, the serving table).

`AgentCore` builds one `CoreContext` and hands it to each piece (recovery, the apply transaction), so a piece's
constructor names its duty, not a dozen collaborators. Holds no logic of its own beyond binding the hardware to
the artifact choice; must never do I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from edge_agent.core.artifacts import Choice, Refusal, choose_artifact
from edge_agent.core.deadlines import Deadlines
from edge_agent.core.events import EventEmitter
from edge_agent.core.ledger import Ledger
from edge_agent.core.ports import AgentPorts
from edge_agent.core.serving_table import ServingTable
from edge_agent.protocol import HardwareFacts, ModelAssignment
from edge_agent.protocol.vocabulary import Channel, ExecutionProvider


@dataclass(frozen=True)
class AgentIdentity:
    """What this agent says about itself in every report."""

    device_id: str
    hardware: HardwareFacts
    agent_version: str
    labels: Mapping[str, str]
    serving_url: str | None = None
    channel: Channel = Channel.MQTT

    @property
    def has_tensorrt_ep(self) -> bool:
        """This onnxruntime offers the TensorRT execution provider (whether a GPU is there is another matter)."""
        return ExecutionProvider.TENSORRT in self.hardware.available_providers

    def choose(self, model: ModelAssignment) -> Choice | Refusal:
        """The artifact of `model` this device runs (core.artifacts.choose_artifact with its hardware bound)."""
        return choose_artifact(model, self.hardware, self.has_tensorrt_ep)


@dataclass(frozen=True)
class CoreContext:
    """The parts of one core its pieces share. `ledger` and `table` are the only mutable ones."""

    identity: AgentIdentity
    ports: AgentPorts
    deadlines: Deadlines
    ledger: Ledger
    table: ServingTable
    events: EventEmitter
