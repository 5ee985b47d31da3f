"""The versioned envelope every MQTT message travels in, and strict parsing of untrusted payloads.

A payload from the network is never trusted: `open_envelope` turns any malformed input into a `ProtocolError`
with a reason, never another exception.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from edge_agent.protocol.messages import DeviceEvent, EventBatch
from edge_agent.protocol.validation import describe_error

PROTOCOL_VERSION = 1
MAX_PAYLOAD_BYTES = 1_048_576


class MessageKind(str, Enum):
    DESIRED = "desired"
    REPORTED = "reported"
    EVENT = "event"  # one DeviceEvent (agents before decision 0016 send only these)
    EVENTS = "events"  # an EventBatch
    TELEMETRY = "telemetry"
    STATUS = "status"


class ProtocolError(ValueError):
    """A message that does not follow the wire contract; the text says why."""


class EnvelopeHeader(BaseModel):
    """What every envelope carries besides its body."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol_version: int = Field(ge=1)
    msg_id: str = Field(min_length=1, max_length=64)
    device_id: str = Field(min_length=1, max_length=128)
    sent_at: datetime
    kind: MessageKind


class Envelope(EnvelopeHeader):
    body: dict[str, Any]


BodyT = TypeVar("BodyT", bound=BaseModel)


class _TypedEnvelope(EnvelopeHeader, Generic[BodyT]):
    """An envelope whose body is parsed with it, in one pass over the JSON (`open_envelope`'s fast path)."""

    body: BodyT


def seal(kind: MessageKind, device_id: str, body: BaseModel, now: datetime) -> bytes:
    """Wrap `body` in an envelope and serialise it for the wire."""
    envelope = Envelope(
        protocol_version=PROTOCOL_VERSION,
        msg_id=uuid.uuid4().hex,
        device_id=device_id,
        sent_at=now,
        kind=kind,
        body=body.model_dump(mode="json"),
    )
    return envelope.model_dump_json().encode()


def open_envelope(payload: bytes, kind: MessageKind, body_type: type[BodyT]) -> tuple[EnvelopeHeader, BodyT]:
    """Parse a wire payload of the expected kind; raise ProtocolError with the reason on anything else.

    A well-formed payload is parsed in one pass, its body with the envelope (the ingest of a fleet's reports spends
    its time here); anything else is parsed again the long way, envelope then body, for the error that says why."""
    _check_size(payload)
    try:
        typed = _TypedEnvelope[body_type].model_validate_json(payload)  # type: ignore[valid-type]
    except ValidationError:
        typed = None
    if typed is not None and typed.kind is kind and typed.protocol_version <= PROTOCOL_VERSION:
        body: BodyT = typed.body
        return typed, body
    envelope = read_envelope(payload)
    return envelope, open_body(envelope, kind, body_type)


def read_envelope(payload: bytes) -> Envelope:
    """The envelope of a wire payload, its body not yet validated (`open_body`); ProtocolError on anything else."""
    _check_size(payload)
    try:
        envelope = Envelope.model_validate_json(payload)
    except ValidationError as exc:
        raise ProtocolError(f"not a valid envelope: {_first_error(exc)}") from exc
    if envelope.protocol_version > PROTOCOL_VERSION:
        raise ProtocolError(
            f"protocol version {envelope.protocol_version} is newer than this side's {PROTOCOL_VERSION}"
        )
    return envelope


def open_body(envelope: Envelope, kind: MessageKind, body_type: type[BodyT]) -> BodyT:
    """The envelope's body as `body_type`, if the envelope is of `kind`; ProtocolError with the reason if not."""
    if envelope.kind is not kind:
        raise ProtocolError(f"expected a {kind.value!r} message, got {envelope.kind.value!r}")
    try:
        return body_type.model_validate(envelope.body)
    except ValidationError as exc:
        raise ProtocolError(f"invalid {kind.value} body: {_first_error(exc)}") from exc


def open_events(payload: bytes) -> tuple[EnvelopeHeader, list[DeviceEvent]]:
    """The step events of a message on the events topic: a batch (`EVENTS`), or one event (`EVENT`, as agents
    before docs/decisions/0016 send them); ProtocolError on anything else."""
    try:
        envelope, batch = open_envelope(payload, MessageKind.EVENTS, EventBatch)
    except ProtocolError:
        if read_envelope(payload).kind is not MessageKind.EVENT:
            raise
        envelope, event = open_envelope(payload, MessageKind.EVENT, DeviceEvent)
        return envelope, [event]
    return envelope, list(batch.events)


def _check_size(payload: bytes) -> None:
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise ProtocolError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")


def _first_error(exc: ValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return str(exc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{describe_error(errors[0])}{more}"
