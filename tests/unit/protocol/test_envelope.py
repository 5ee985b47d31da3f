"""Opening wire payloads: a well-formed one in one pass, anything else refused with the reason that says why.

`open_envelope` parses a good payload's body together with its envelope (the control plane's ingest of a fleet's
reports spends its time there), and parses anything it cannot open that way again, envelope then body, for the
error. These tests pin that both ways agree: the same body, and the same refusals for what an attacker sends.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from edge_agent.protocol import (
    DeviceEvent,
    EventBatch,
    EventStep,
    HardwareFacts,
    MessageKind,
    ProtocolError,
    ReportedState,
    open_envelope,
    open_events,
    seal,
)
from edge_agent.protocol.envelope import MAX_PAYLOAD_BYTES, open_body, read_envelope
from edge_agent.protocol.messages import Presence, PresenceStatus

T0 = datetime(2030, 1, 1, tzinfo=UTC)
REPORT = ReportedState(
    device_id="dev-1",
    agent_version="1.0",
    applied_generation=7,
    hardware=HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64"),
    labels={"site": "a"},
)


def _event(step: EventStep = EventStep.ACTIVATED) -> DeviceEvent:
    return DeviceEvent(generation=7, step=step, at=T0)


def _edited(payload: bytes, **changes: Any) -> bytes:
    document = json.loads(payload)
    document.update(changes)
    return json.dumps(document).encode()


def test_a_sealed_report_opens_to_the_same_envelope_and_body_as_the_long_way() -> None:
    payload = seal(MessageKind.REPORTED, "dev-1", REPORT, T0)
    envelope, body = open_envelope(payload, MessageKind.REPORTED, ReportedState)
    long_way = read_envelope(payload)
    assert body == REPORT == open_body(long_way, MessageKind.REPORTED, ReportedState)
    assert (envelope.device_id, envelope.sent_at, envelope.kind, envelope.msg_id) == (
        long_way.device_id,
        long_way.sent_at,
        long_way.kind,
        long_way.msg_id,
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        pytest.param(seal(MessageKind.STATUS, "dev-1", Presence(state=PresenceStatus.ONLINE), T0),
                     "expected a 'reported' message, got 'status'", id="another-kind"),
        pytest.param(_edited(seal(MessageKind.REPORTED, "dev-1", REPORT, T0), protocol_version=2),
                     "protocol version 2 is newer than this side's 1", id="newer-version"),
        pytest.param(_edited(seal(MessageKind.REPORTED, "dev-1", REPORT, T0), body={"device_id": "dev-1"}),
                     "invalid reported body", id="body-not-a-report"),
        pytest.param(_edited(seal(MessageKind.REPORTED, "dev-1", REPORT, T0), shell="rm -rf /"),
                     "not a valid envelope", id="unknown-envelope-field"),
        pytest.param(b"\xff{not json", "not a valid envelope", id="not-json"),
        pytest.param(b"[" * (MAX_PAYLOAD_BYTES + 1), "over the 1048576-byte limit", id="oversize"),
    ],
)  # fmt: skip
def test_what_cannot_be_opened_is_refused_with_the_reason(payload: bytes, reason: str) -> None:
    with pytest.raises(ProtocolError, match=reason):
        open_envelope(payload, MessageKind.REPORTED, ReportedState)


def test_a_body_field_of_the_wrong_type_is_refused_not_coerced() -> None:
    document = json.loads(seal(MessageKind.REPORTED, "dev-1", REPORT, T0))
    document["body"]["applied_generation"] = "seven"
    with pytest.raises(ProtocolError, match="invalid reported body"):
        open_envelope(json.dumps(document).encode(), MessageKind.REPORTED, ReportedState)


def test_the_events_topic_takes_a_batch_or_one_event_and_nothing_else() -> None:
    batch = [_event(EventStep.RECEIVED), _event(EventStep.ACTIVATED)]
    _, opened = open_events(seal(MessageKind.EVENTS, "dev-1", EventBatch(events=batch), T0))
    assert opened == batch
    _, single = open_events(seal(MessageKind.EVENT, "dev-1", _event(), T0))
    assert single == [_event()]
    with pytest.raises(ProtocolError, match="expected a 'events' message, got 'reported'"):
        open_events(seal(MessageKind.REPORTED, "dev-1", REPORT, T0))
    too_many = _edited(
        seal(MessageKind.EVENTS, "dev-1", EventBatch(events=batch), T0),
        body={"events": [_event().model_dump(mode="json")] * 17},
    )
    with pytest.raises(ProtocolError, match="invalid events body"):
        open_events(too_many)
