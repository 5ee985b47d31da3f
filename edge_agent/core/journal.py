"""The journal's records: what this device has applied, what it serves, and what it was doing when it stopped.

These models are the journal's format on disk (core.journal_file keeps them there, atomically). Never holds
runtime objects: only what is needed to rebuild them. Must never read or write a file itself.
"""

from __future__ import annotations

from enum import Enum

from pydantic import BaseModel, ConfigDict, Field

from edge_agent.protocol import ApplyOutcome, HardwareKey, RuntimeOptions, SignedDesiredState
from edge_agent.protocol.vocabulary import ArtifactKind

JOURNAL_VERSION = 1


class ApplyStep(str, Enum):
    """Where an apply was; recorded before each step begins."""

    RECEIVED = "received"
    DOWNLOAD = "download"
    VERIFY = "verify"
    INSTALL = "install"
    LOAD = "load"
    SELF_TEST = "self_test"
    COMMIT = "commit"


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SlotRecord(_Record):
    """One installed model version: its slot directory under `slots/{name}/` holds model and self-test files.

    `build_id`, `artifact_kind`, `model_sha256` and `runtime` describe the artifact actually installed, which is
    the assignment's fallback when `fallback_reason` is set (the primary did not fit this device).
    """

    name: str
    version: int
    build_id: str
    slot: str
    model_sha256: str
    runtime: RuntimeOptions = Field(default_factory=RuntimeOptions)
    provider: str | None = None
    artifact_kind: ArtifactKind = ArtifactKind.ONNX
    fallback_reason: str | None = None
    # The installed artifact's hardware key: a plan is re-checked against the hardware before it is reloaded.
    hardware_key: HardwareKey | None = None


class PendingApply(_Record):
    generation: int
    step: ApplyStep
    model: str | None = None
    attempts: int = 1


class JournalState(_Record):
    version: int = JOURNAL_VERSION
    applied_generation: int = 0
    failed_generation: int = 0
    active: dict[str, SlotRecord] = Field(default_factory=dict)
    previous: dict[str, SlotRecord] = Field(default_factory=dict)
    desired: SignedDesiredState | None = None
    pending: PendingApply | None = None
    last_apply: ApplyOutcome | None = None
