"""The journal: what this device has applied, what it serves, and what it was doing when it stopped.

Written atomically (temp file, fsync, os.replace, fsync of the directory) so a kill at any instant leaves either
the old or the new journal, never a torn one. Never holds runtime objects: only what is needed to rebuild them.
"""

from __future__ import annotations

import json
import os
from enum import Enum
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.core.errors import JournalError
from edge_agent.protocol import ApplyOutcome, HardwareKey, RuntimeOptions, SignedDesiredState

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
    artifact_kind: str = "onnx"
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


class Journal:
    """The journal file of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "journal.json"

    def load(self) -> JournalState:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return JournalState()
        except OSError as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        try:
            return JournalState.model_validate_json(text)
        except ValidationError as exc:
            raise JournalError(f"journal {self.path} is corrupt: {exc.errors()[0]['msg']}") from exc

    def save(self, state: JournalState) -> None:
        write_atomic(self.path, json.dumps(state.model_dump(mode="json"), indent=2).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers and crashes see the old or the new content, nothing else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise JournalError(f"cannot write {path}: {exc}") from exc
