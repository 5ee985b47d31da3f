"""What happened to a rollout, one record per transition: the SSE stream and `edgectl rollout watch` show them.

Records are written in the same transaction as the state they describe, so the stream never shows a transition
the stored rollout does not have (and never misses one after a restart).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from control_plane.domain.rollout_progress import Note


@dataclass(frozen=True)
class RolloutEventRecord:
    id: int
    rollout_id: str
    at: datetime
    kind: str
    device_id: str | None
    step: str | None
    message: str
    data: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class NewEvent:
    """A record not yet stored (the store gives it its id)."""

    at: datetime
    kind: str
    device_id: str | None
    step: str | None
    message: str
    data: Mapping[str, object] = field(default_factory=dict)

    @classmethod
    def of(cls, note: Note, at: datetime) -> NewEvent:
        return cls(at, note.kind.value, note.device_id, note.step, note.message, dict(note.data))
