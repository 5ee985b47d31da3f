"""Row <-> domain value conversion. Everything stored is UTC: SQLite hands back naive datetimes, PostgreSQL
(timestamptz, sessions in UTC: engine.py) aware ones; `utc` makes both the same aware UTC value.

A table's columns mostly carry a domain dataclass's fields under the same names: `from_row` and `to_row` copy
those by name, converting by the field's declared type (enums by value, pydantic models as JSON, datetimes to
UTC), so a field is listed again only where its name or shape really differs (`given`). Nothing here opens a
session or decides anything.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import Enum
from typing import Any, TypeVar

from pydantic import BaseModel

from control_plane.adapters.db.tables import Base, BuildRow, DeviceRow, TrainingJobRow, VersionRow
from control_plane.domain.fleet import DeliveryFailure, Device, DeviceFacts
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.registry import Build, ModelVersion, TensorInfo
from control_plane.domain.training import TrainingJob
from edge_agent.protocol import HardwareFacts

T = TypeVar("T")
R = TypeVar("R", bound=Base)


def utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def utc_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else utc(value)


# -- generic: a dataclass's fields <-> a row's columns of the same names ---------------------------------------------
_FIELD_TYPES: dict[type, dict[str, type | None]] = {}  # per dataclass, computed once


def _field_types(cls: type) -> dict[str, type | None]:
    """Each field's enum or pydantic model class (None: stored as it is), `X | None` read as X."""
    hints = typing.get_type_hints(cls)
    out: dict[str, type | None] = {}
    for f in dataclasses.fields(cls):
        hint = hints[f.name]
        if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
            members = [a for a in typing.get_args(hint) if a is not type(None)]
            hint = members[0] if len(members) == 1 else None
        is_class = isinstance(hint, type)
        out[f.name] = hint if is_class and issubclass(hint, (Enum, BaseModel)) else None
    return out


def _read(value: Any, kind: type | None) -> Any:
    if value is None:
        return None
    if isinstance(value, datetime):
        return utc(value)
    if kind is not None and issubclass(kind, BaseModel):
        if isinstance(value, str):  # a JSON column selected as its text: parsed and validated in one pass
            return kind.model_validate_json(value) if value != "null" else None
        return kind.model_validate(value) if value else None
    if kind is not None and issubclass(kind, Enum):
        return kind(value)
    if isinstance(value, dict):
        return dict(value)
    return value


def from_row(cls: type[T], row: object, **given: Any) -> T:
    """The dataclass `cls` read from `row`: each field from `given`, else from the row's column of the same name
    (a field the row has no column for keeps its default)."""
    kinds = _FIELD_TYPES.get(cls) or _FIELD_TYPES.setdefault(cls, _field_types(cls))
    values = dict(given)
    for name, kind in kinds.items():
        if name not in values and hasattr(row, name):
            values[name] = _read(getattr(row, name), kind)
    return cls(**values)


def _stored(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return dict(value)
    return value


def to_values(row_cls: type[Base], value: object, **given: Any) -> dict[str, Any]:
    """The column values of a new row of `row_cls`: each column from `given`, else from `value`'s attribute of the
    same name (a column `value` has no attribute for is left to the database). For bulk INSERTs."""
    columns = row_cls.__table__.columns.keys()
    return {
        name: given[name] if name in given else _stored(getattr(value, name))
        for name in columns
        if name in given or hasattr(value, name)
    }


def to_row(row_cls: type[R], value: object, **given: Any) -> R:
    """A new row of `row_cls` (`to_values`)."""
    return row_cls(**to_values(row_cls, value, **given))


# -- where names or shapes differ -----------------------------------------------------------------------------------
def tensors_to_json(tensors: tuple[TensorInfo, ...]) -> list[dict[str, Any]]:
    return [{"name": t.name, "shape": list(t.shape), "dtype": t.dtype} for t in tensors]


def tensors_from_json(data: list[dict[str, Any]]) -> tuple[TensorInfo, ...]:
    return tuple(TensorInfo(name=d["name"], shape=tuple(d["shape"]), dtype=d["dtype"]) for d in data)


def version_from_row(row: VersionRow) -> ModelVersion:
    return from_row(
        ModelVersion,
        row,
        model=row.model_name,
        inputs=tensors_from_json(row.inputs),
        outputs=tensors_from_json(row.outputs),
        tolerances={str(k): dict(v) for k, v in (row.tolerances or {}).items()},
    )


def build_from_row(row: BuildRow) -> Build:
    return from_row(Build, row, model=row.model_name, options=dict(row.options or {}))


def device_from_row(row: DeviceRow | Any) -> Device:
    """A device from its ORM row, or from a row of `FleetRepository`'s device columns (its documents as their
    JSON text, the hardware decoded once per distinct text)."""
    hardware = row.hardware
    given = {"hardware": hardware_from_text(hardware)} if isinstance(hardware, str) else {}
    return from_row(Device, row, ansible=ansible_from_json(row.ansible), **given, **_device_columns(row))


def facts_from_row(row: Any) -> DeviceFacts:
    """A device's facts from a row of its small columns (`FleetRepository.device_facts` selects them, the hardware
    as its stored JSON text)."""
    return from_row(DeviceFacts, row, hardware=hardware_from_text(row.hardware), **_device_columns(row))


@functools.lru_cache(maxsize=4096)
def hardware_from_text(text: str | None) -> HardwareFacts | None:
    """Hardware facts from their stored JSON text, decoded once per distinct text: devices of one kind share the
    same facts, and the ingest writer and the rollout executor read them batch after batch (validating them again
    was a tenth of the control plane's CPU at 1,000 devices). The value is frozen, so sharing it is safe."""
    if text is None or text == "null":
        return None
    return HardwareFacts.model_validate_json(text)


def _device_columns(row: Any) -> dict[str, Any]:
    """The device columns whose stored shape differs from the domain's, shared by `Device` and `DeviceFacts`."""
    return {
        "labels": {str(k): str(v) for k, v in row.labels.items()},
        "delivery_failure": delivery_from_json(row.delivery),
        "issued_builds": issued_from_json(row.issued_builds),
    }


def issued_from_json(data: dict[str, Any] | None) -> dict[str, tuple[str, int]]:
    return {str(build): (str(sent[0]), int(sent[1])) for build, sent in (data or {}).items()}


def issued_to_json(issued: Mapping[str, tuple[str, int]]) -> dict[str, Any]:
    return {build: [model, version] for build, (model, version) in issued.items()}


def ansible_to_json(connection: AnsibleConnection | None) -> dict[str, Any] | None:
    return None if connection is None else dataclasses.asdict(connection)


def ansible_from_json(data: dict[str, Any] | None) -> AnsibleConnection | None:
    if not data:
        return None
    return AnsibleConnection(
        host=data.get("host"),
        port=data.get("port"),
        user=data.get("user"),
        connection=str(data.get("connection") or "ssh"),
        python=data.get("python"),
    )


def delivery_to_json(failure: DeliveryFailure) -> dict[str, Any]:
    return {"generation": failure.generation, "reason": failure.reason, "at": utc(failure.at).isoformat()}


def delivery_from_json(data: dict[str, Any] | None) -> DeliveryFailure | None:
    if not data:
        return None
    return DeliveryFailure(
        generation=int(data["generation"]), reason=str(data["reason"]), at=utc(datetime.fromisoformat(data["at"]))
    )


def job_from_row(row: TrainingJobRow) -> TrainingJob:
    return from_row(TrainingJob, row, model=row.model_name)
