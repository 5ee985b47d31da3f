"""Public JSON schemas of the playbook-run routes (docs/api.md) and their construction from domain values."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from control_plane.api.schemas.base import Out
from control_plane.domain.playbooks import (
    HostStatus,
    PlaybookName,
    PlaybookRunRequest,
    RunEvent,
    RunStatus,
)
from edge_agent.protocol.messages import Name

PLAYBOOKS = ", ".join(p.value for p in PlaybookName)


class PlaybookRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    playbook: str = Field(description=f"One of: {PLAYBOOKS}.")
    selector: str | None = Field(
        default=None, min_length=1, max_length=1000, description="Devices on the Ansible channel: k=v,gpu_class=C."
    )
    hosts: list[Name] = Field(default_factory=list, max_length=10_000, description="Or these device ids.")
    extra_vars: dict[str, Any] = Field(
        default_factory=dict,
        max_length=256,
        description="Only the variables the playbook declares (playbooks/api_vars.yml), as data: no ansible_* "
        "variable, no Jinja delimiter in any string.",
    )

    @field_validator("playbook")
    @classmethod
    def _known_playbook(cls, value: str) -> str:
        name = value.removesuffix(".yml")
        if name not in {p.value for p in PlaybookName}:
            raise ValueError(f"unknown playbook {value!r}; valid: {PLAYBOOKS}")
        return name

    def to_domain(self) -> PlaybookRunRequest:
        return PlaybookRunRequest(
            playbook=PlaybookName(self.playbook),
            selector=self.selector,
            hosts=tuple(self.hosts),
            extra_vars=dict(self.extra_vars),
        )


class HostResultOut(Out):
    host: str
    status: HostStatus
    result: dict[str, Any] | None
    message: str | None


class PlaybookRunOut(Out):
    id: str
    playbook: PlaybookName
    status: RunStatus
    purpose: str | None
    selector: str | None
    hosts: list[HostResultOut]
    extra_vars: dict[str, Any] = Field(
        description="As given, with what secret-looking keys hold (at any depth) replaced by ***."
    )
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    rc: int | None
    error: str | None


def event_json(e: RunEvent) -> dict[str, Any]:
    """One run event as sent in the SSE stream's `data:`."""
    return {
        "id": e.id,
        "run_id": e.run_id,
        "seq": e.seq,
        "at": e.at.isoformat(),
        "kind": e.kind,
        "host": e.host,
        "task": e.task,
        "changed": e.changed,
        "failed": e.failed,
        "message": e.message,
    }
