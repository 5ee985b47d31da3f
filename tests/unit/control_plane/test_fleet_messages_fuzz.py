"""Fuzzing the control plane's MQTT parser: `FleetService.handle_message`, the one callback the MQTT adapter hands
every message on `edge/devices/+/{reported,events,status,telemetry}` to, over a real SQLite store.

What a device (or anyone holding its broker credential) can send is arbitrary: any topic, any bytes. For every
message, however malformed, nothing raises out of the handler, and what was stored stays readable. For every bad
message - a topic that is not a device's, bytes that are not JSON, an envelope of the wrong kind or version, one
naming another device, a body breaking the wire contract, a payload over its size, a report naming a generation
never issued - the refusal is logged with its reason and nothing of the message is stored: no reported state,
telemetry, presence, device event or new device, and no rollout is woken.

Bounded for CI (docs/security.md, "Fuzzing"): a few hundred derandomized examples; EDGE_FUZZ_EXAMPLES for more.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import event, given
from hypothesis import strategies as st

from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.api.schemas.devices import DeviceEventOut, DeviceOut
from control_plane.domain.fleet import EventSource
from control_plane.services.fleet import FleetService
from edge_agent.protocol import (
    DeviceEvent,
    EventStep,
    HardwareFacts,
    MessageKind,
    ReportedState,
    Telemetry,
    Topics,
)
from tests.fuzzing import fuzz_settings

pytestmark = pytest.mark.fuzz

ENROLLED = ("dev-1", "dev-2")
STRANGER = "dev-9"  # a well-formed device id that was never enrolled
LEAF_KIND = {
    "reported": MessageKind.REPORTED,
    "events": MessageKind.EVENT,
    "status": MessageKind.STATUS,
    "telemetry": MessageKind.TELEMETRY,
}
DEVICE_TOPIC = re.compile(r"^edge/devices/[A-Za-z0-9][A-Za-z0-9._-]{0,127}/[^/]*$")
OVER_ANY_LIMIT = 2**20 + 1  # past the wire contract's 1 MiB, and past every per-kind limit below it
PER_MESSAGE = timedelta(seconds=5)  # one example's work; a message is refused or stored in milliseconds


class Clock:
    """The fleet's clock; the test moves it on before each message so that no rate limit or de-duplication of
    repeated refusals hides one (those have their own tests)."""

    def __init__(self) -> None:
        self.now = datetime(2030, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def tick(self) -> None:
        self.now += timedelta(hours=1)


@dataclass
class Fleet:
    service: FleetService
    clock: Clock
    records: list[logging.LogRecord] = field(default_factory=list)
    woken: list[Collection[str]] = field(default_factory=list)

    def send(self, topic: str, payload: bytes) -> None:
        self.clock.tick()
        self.records.clear()
        self.woken.clear()
        self.service.handle_message(topic, payload)
        self.service.drain()  # what the ingest writer does on its thread

    def stored(self) -> dict[str, Any]:
        """Everything a message could have changed, read the way the API reads it."""
        views = {v.device.id: v for v in self.service.list_devices()}
        return {
            device_id: (
                view.device.reported,
                view.device.telemetry,
                view.device.status,
                view.device.last_seen,
                view.device.hardware,
                view.device.gpu_class,
                dict(view.device.labels),
                view.device.channel,
                self.service.get_device(device_id).telemetry,
                [e for e in self.service.list_events(device_id, 10_000) if e.source is EventSource.DEVICE],
            )
            for device_id, view in views.items()
        }


class _Collect(logging.Handler):
    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__(logging.DEBUG)
        self._records = records

    def emit(self, record: logging.LogRecord) -> None:
        self._records.append(record)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('fleet-fuzz') / 'cp.db'}")
    migrate(engine)
    clock = Clock()
    service = FleetService(FleetRepository(engine), Topics(), clock, offline_after=timedelta(minutes=1))
    for device_id in ENROLLED:
        service.enroll(device_id, channel="mqtt")
    fleet = Fleet(service, clock)
    service.on_report(fleet.woken.append)
    logger = logging.getLogger("control_plane.services.fleet")
    handler, level = _Collect(fleet.records), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield fleet
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        engine.dispose()


# -- what a well-formed message looks like ---------------------------------------------------------------------


def valid_body(leaf: str, device_id: str) -> dict[str, Any]:
    at = datetime(2030, 1, 1, tzinfo=UTC)
    hardware = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")
    bodies = {
        "reported": ReportedState(device_id=device_id, agent_version="1.0", applied_generation=0, hardware=hardware),
        "events": DeviceEvent(generation=0, step=EventStep.RECEIVED, at=at),
        "telemetry": Telemetry(window_s=10),
    }
    return bodies[leaf].model_dump(mode="json") if leaf in bodies else {"state": "online"}


def envelope(leaf: str, device_id: str, body: Any, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    sealed = {
        "protocol_version": 1,
        "msg_id": "0123456789abcdef",
        "device_id": device_id,
        "sent_at": "2030-01-01T00:00:00Z",
        "kind": LEAF_KIND[leaf].value,
        "body": body,
    }
    return sealed | (changes or {})


def wire(data: Any) -> bytes:
    return json.dumps(data).encode()  # NaN and Infinity as JSON's common extension: the parser accepts them


# -- what breaks the wire contract, kind by kind ----------------------------------------------------------------

NAN, INF = math.nan, math.inf
TELEMETRY_MODEL = {"name": "m", "version": 1, "requests": 0, "errors": 0}
# (path in the body, a value the contract refuses there); `DELETE` removes a required field.
DELETE = object()
INVALID_FIELDS: dict[str, list[tuple[tuple[str, ...], Any]]] = {
    "reported": [
        (("device_id",), "dev 1"),
        (("device_id",), ""),
        (("device_id",), 7),
        (("device_id",), DELETE),
        (("agent_version",), None),
        (("agent_version",), "v" * 100_000),
        (("applied_generation",), -1),
        (("applied_generation",), 2**64),
        (("applied_generation",), "many"),
        (("applied_generation",), [1]),
        (("applied_generation",), NAN),
        (("hardware",), None),
        (("hardware",), DELETE),
        (("hardware", "gpu_class"), "../etc"),
        (("hardware", "cpu_count"), 0),
        (("hardware", "memory_mb"), -1),
        (("labels",), {"bad key!": "v"}),
        (("labels",), {"k": "v" * 129}),
        (("labels",), ["k=v"]),
        (("models",), [{}]),
        (("models",), "all"),
        (("channel",), "pigeon"),
        (("serving_url",), "ftp://host/x"),
        (("last_apply",), {"generation": 0}),
        (("unexpected",), 1),
    ],
    "events": [
        (("generation",), -1),
        (("generation",), 2**64),
        (("generation",), None),
        (("generation",), DELETE),
        (("step",), "exploded"),
        (("step",), DELETE),
        (("reason",), "r" * 2001),
        (("at",), "yesterday"),
        (("at",), None),
        (("at",), DELETE),
        (("version",), -5),
        (("version",), 2**64),
        (("unexpected",), True),
    ],
    "status": [
        (("state",), "maybe"),
        (("state",), None),
        (("state",), 1),
        (("state",), DELETE),
        (("unexpected",), 1),
    ],
    "telemetry": [
        (("window_s",), 0),
        (("window_s",), -1),
        (("window_s",), NAN),
        (("window_s",), INF),
        (("window_s",), "ten"),
        (("window_s",), DELETE),
        (("models",), [TELEMETRY_MODEL | {"version": 0}]),
        (("models",), [TELEMETRY_MODEL | {"requests": -1}]),
        (("models",), [TELEMETRY_MODEL | {"errors": 2**64}]),
        (("models",), [TELEMETRY_MODEL | {"p99_ms": NAN}]),
        (("models",), [TELEMETRY_MODEL | {"p50_ms": -INF}]),
        (("models",), [{"name": "../m", "version": 1}]),
        (("models",), {"m": 1}),
        (("device",), {"cpu_percent": "hot"}),
        (("unexpected",), 1),
    ],
}
INVALID_ENVELOPES: list[dict[str, Any]] = [
    {"protocol_version": 2},
    {"protocol_version": 2**70},
    {"protocol_version": 0},
    {"protocol_version": "one"},
    {"msg_id": ""},
    {"msg_id": "m" * 65},
    {"device_id": ""},
    {"device_id": "d" * 129},
    {"sent_at": "never"},
    {"sent_at": None},
    {"kind": "order"},
    {"body": []},
    {"body": "body"},
    {"body": None},
    {"signature": "trust me"},
]


def with_change(body: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    changed = json.loads(json.dumps(body))
    target = changed
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        target.pop(path[-1], None)
    else:
        target[path[-1]] = value
    return changed


leaves = st.sampled_from(sorted(LEAF_KIND))
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)


@dataclass(frozen=True)
class Bad:
    """A message that must be refused, and why it must be."""

    why: str
    topic: str
    payload: bytes
    # A leaf the control plane never subscribes to can only arrive through a broader subscription than its own:
    # noted at debug level. Everything else is a warning naming the device.
    level: int = logging.WARNING

    @property
    def device_id(self) -> str | None:
        parts = self.topic.split("/")
        return parts[2] if DEVICE_TOPIC.match(self.topic) else None


# The body breaks the contract in many more ways than the rest: it gets a larger share of the examples.
BAD_KINDS = [
    *["topic", "leaf", "bytes", "json", "kind", "other-device", "envelope", "oversized", "stranger", "generation"],
    *["body"] * 6,
]


@st.composite
def bad_messages(draw: st.DrawFn) -> Bad:
    leaf, device_id = draw(leaves), draw(st.sampled_from(ENROLLED))
    topic = f"edge/devices/{device_id}/{leaf}"
    body = valid_body(leaf, device_id)
    how = draw(st.sampled_from(BAD_KINDS))
    if how == "topic":
        text = draw(
            (st.text(max_size=80) | st.sampled_from(NEAR_MISS_TOPICS)).filter(lambda t: not DEVICE_TOPIC.match(t))
        )
        return Bad("not a device topic", text, wire(envelope(leaf, device_id, body)))
    if how == "leaf":
        other = draw(st.sampled_from(["desired", "config", "reported2", "EVENTS"]) | st.from_regex(r"\A[a-z]{1,12}\Z"))
        if other in LEAF_KIND:
            other = other + "-not"
        return Bad("a leaf nobody listens to", f"edge/devices/{device_id}/{other}", wire({"x": 1}), logging.DEBUG)
    if how == "bytes":
        data = draw(st.binary(min_size=1, max_size=2048))
        if data.strip().startswith(b"{"):
            data = b"\xff" + data  # never a JSON object by chance
        return Bad("not JSON", topic, data)
    if how == "json":
        value = draw(json_values.filter(lambda v: not isinstance(v, dict) or "body" not in v))
        return Bad("JSON that is not an envelope", topic, wire(value))
    if how == "kind":
        kind = draw(st.sampled_from([k for k in MessageKind if k is not LEAF_KIND[leaf]]))
        return Bad(
            f"a {kind.value} on the {leaf} topic", topic, wire(envelope(leaf, device_id, body, {"kind": kind.value}))
        )
    if how == "other-device":
        other = draw(st.sampled_from([d for d in (*ENROLLED, STRANGER, "DEV-1", "dev-1 ") if d != device_id]))
        if leaf == "reported" and draw(st.booleans()):
            return Bad(
                "a report about another device", topic, wire(envelope(leaf, device_id, body | {"device_id": other}))
            )
        return Bad("an envelope naming another device", topic, wire(envelope(leaf, other, body)))
    if how == "envelope":
        changes = draw(st.sampled_from(INVALID_ENVELOPES))
        return Bad(f"an envelope with {changes}", topic, wire(envelope(leaf, device_id, body, changes)))
    if how == "body":
        path, value = draw(st.sampled_from(INVALID_FIELDS[leaf]))
        shown = "removed" if value is DELETE else repr(value)[:40]
        changed = with_change(body, path, value)
        return Bad(f"{leaf} body with {'.'.join(path)} {shown}", topic, wire(envelope(leaf, device_id, changed)))
    if how == "oversized":
        sealed = wire(envelope(leaf, device_id, body))
        return Bad("over the size limit", topic, b" " * (OVER_ANY_LIMIT - len(sealed) + 1) + sealed)
    if how == "stranger":
        return Bad(
            "from a device never enrolled", topic.replace(device_id, STRANGER), wire(envelope(leaf, STRANGER, body))
        )
    # A well-formed report of a generation the control plane never issued (it issued none).
    claimed = draw(st.integers(min_value=1, max_value=2**53))
    report = body | {"applied_generation": claimed}
    return Bad(
        "a report of a generation never issued",
        f"edge/devices/{device_id}/reported",
        wire(envelope("reported", device_id, report)),
    )


NEAR_MISS_TOPICS = [
    "",
    "edge",
    "edge/devices",
    "edge/devices/dev-1",
    "edge/devices/dev-1/",
    "edge/devices//reported",
    "edge/devices/../reported",
    "edge/devices/+/reported",
    "edge/devices/#",
    "edge/devices/dev 1/reported",
    "edge/devices/-dev/reported",
    "edge/devices/dev-1/reported/extra",
    "edge//devices/dev-1/reported",
    "/edge/devices/dev-1/reported",
    "other/devices/dev-1/reported",
    "EDGE/devices/dev-1/reported",
    "edge/device/dev-1/reported",
    "edge/devices/" + "d" * 129 + "/reported",
    "edge/devices/dév-1/reported",
    "edge/devices/dev-1\x00/reported",
]


@given(message=bad_messages())
@fuzz_settings(ci_examples=800, deadline=PER_MESSAGE)
def test_every_bad_message_is_refused_with_its_reason_and_nothing_is_stored(fleet: Fleet, message: Bad) -> None:
    before = fleet.stored()
    event(message.why.split(" with ")[0])

    fleet.send(message.topic, message.payload)  # raising here fails the test: the handler must not

    said = [r.getMessage() for r in fleet.records if r.levelno >= message.level]
    assert said, f"{message.why}: refused without a word at level {logging.getLevelName(message.level)}"
    if message.device_id is not None:
        assert any(message.device_id in text for text in said), f"{message.why}: {said} names no device"
    assert fleet.stored() == before, f"{message.why}: something of a refused message was stored"
    assert fleet.woken == [], f"{message.why}: a refused message woke the rollouts"


# Values of the right type with any content: what a buggy or hostile agent that still speaks the contract sends.
offsets = st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59))
instants = st.datetimes(timezones=st.none() | offsets.map(timezone)).map(datetime.isoformat)
names = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._-]{0,127}\Z")
texts = st.text(max_size=200) | st.text(min_size=1900, max_size=2000)
floats = st.floats(allow_nan=True, allow_infinity=True)
model_windows = st.fixed_dictionaries(
    {
        "name": names,
        "version": st.integers(1, 2**31),
        "requests": st.integers(0, 2**53),
        "errors": st.integers(0, 2**53),
    },
    optional={"p50_ms": st.floats(0, 1e9), "p99_ms": st.floats(0, 1e9)},
)
PLAUSIBLE: dict[str, dict[str, st.SearchStrategy[Any]]] = {
    "reported": {
        "agent_version": st.text(max_size=64),
        "labels": st.dictionaries(st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9._/-]{0,62}\Z"), st.text(max_size=128)),
        "hardware.gpu_class": names,
        "hardware.arch": st.text(max_size=32),
        "hardware.gpu_name": texts,
        "hardware.available_providers": st.lists(st.text(max_size=64), max_size=16),
        "channel": st.sampled_from(["mqtt", "ansible"]),
        "serving_url": st.sampled_from(["http://127.0.0.1:8500", "https://[::1]:1/v2", "http://h"]) | texts,
        "last_apply": st.fixed_dictionaries(
            {
                "generation": st.just(0),
                "phase": st.sampled_from(["in_progress", "succeeded", "failed"]),
                "at": instants,
            },
            optional={"reason": texts},
        ),
    },
    "events": {
        "generation": st.integers(0, 2**53),
        "step": st.sampled_from([s.value for s in EventStep]),
        "model": st.none() | st.text(max_size=128),
        "version": st.none() | st.integers(0, 2**31),
        "reason": st.none() | texts,
        "at": instants,
    },
    "status": {"state": st.sampled_from(["online", "offline"])},
    "telemetry": {
        "window_s": st.floats(min_value=1e-300, max_value=86_400),
        "models": st.lists(model_windows, max_size=3),
        "device.cpu_percent": floats,
        "device.memory_percent": floats,
        "device.temperature_c": floats,
    },
}
ENVELOPE_FIELDS = {
    "protocol_version": st.integers(1, 1),
    "msg_id": st.text(min_size=1, max_size=64),
    "sent_at": instants,
}


@st.composite
def any_messages(draw: st.DrawFn) -> tuple[str, bytes]:
    """Envelopes on device topics whose fields hold values of the right type with any content (most of them) or
    any JSON at all: some are stored, most are refused."""
    leaf, device_id = draw(leaves), draw(st.sampled_from([*ENROLLED * 4, STRANGER]))
    topic = f"edge/devices/{device_id}/{leaf}" if draw(st.integers(0, 9)) else draw(st.text(max_size=60))
    body = valid_body(leaf, device_id)
    fields = PLAUSIBLE[leaf]
    for key in draw(st.lists(st.sampled_from(sorted(fields)), max_size=len(fields), unique=True)):
        value = draw(fields[key] if draw(st.integers(0, 9)) else json_values)
        body = with_change(body, tuple(key.split(".")), value)
    changes = {key: draw(strategy | json_values) for key, strategy in ENVELOPE_FIELDS.items() if draw(st.booleans())}
    return topic, wire(envelope(leaf, device_id, body, changes))


@given(message=any_messages())
@fuzz_settings(ci_examples=600, deadline=PER_MESSAGE)
def test_no_message_raises_and_what_is_stored_stays_readable(fleet: Fleet, message: tuple[str, bytes]) -> None:
    topic, payload = message
    before = fleet.stored()
    fleet.send(topic, payload)  # raising here fails the test: the handler must not
    stored = fleet.stored()  # every device, its events and telemetry read back, and render as the API answers them
    event("stored" if stored != before else "refused")
    assert set(stored) == set(ENROLLED), "a message created a device that was never enrolled"
    for device_id in ENROLLED:
        DeviceOut.model_validate(fleet.service.get_device(device_id)).model_dump_json()
        for record in fleet.service.list_events(device_id, 10_000):
            DeviceEventOut.model_validate(record).model_dump_json()
