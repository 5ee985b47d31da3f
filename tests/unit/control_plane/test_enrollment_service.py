"""The enrollment and fleet services over a real SQLite database, with an injected clock: token expiry, approval,
denial, rotation, forgetting; and what a device's messages may do (rate, size, unknown devices, event cap).

The broker's accounts are the one stand-in: a recorder of `provision`/`revoke` (the port of issue 9, item 6)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.enrollment_repository import EnrollmentRepository
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.identity_repository import TokenRepository
from control_plane.domain.errors import Conflict, Unauthenticated
from control_plane.domain.fleet import EventSource
from control_plane.domain.identity import Principal, Role
from control_plane.domain.rates import RatePolicy
from control_plane.services.enrollment import EnrollmentService, IdentityPolicy
from control_plane.services.fleet import FleetService, MessageLimits
from control_plane.services.identity import IdentityService
from edge_agent.protocol import (
    DeviceEvent,
    EventStep,
    HardwareFacts,
    MessageKind,
    ModelTelemetry,
    Signer,
    Telemetry,
    Topics,
    seal,
)
from edge_agent.protocol.enrollment import EnrollAnswer, EnrollmentStatus, signed_request

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HW = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")
OPERATOR = Principal("token:op", "op", Role.OPERATOR)


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now


@dataclass
class BrokerRecorder:
    calls: list[tuple[str, str]] = field(default_factory=list)

    def provision(self, device_id: str, password: str) -> None:
        self.calls.append(("provision", device_id))

    def revoke(self, device_id: str) -> None:
        self.calls.append(("revoke", device_id))


@dataclass
class World:
    clock: Clock
    fleet: FleetRepository
    identity: IdentityService
    enrollment: EnrollmentService
    broker: BrokerRecorder

    def ask(self, credential: str, key: Signer, device_id: str | None, previous: Signer | None = None) -> EnrollAnswer:
        caller = self.enrollment.authenticate(f"Bearer {credential}")
        request = signed_request(key, HW, self.clock(), device_id, previous)
        return self.enrollment.enroll(caller, request)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    clock = Clock()
    fleet = FleetRepository(engine, events_kept=10)
    identity = IdentityService(TokenRepository(engine), clock)
    broker = BrokerRecorder()
    policy = IdentityPolicy(control_plane_public_key=Signer.generate().public_key_b64, mqtt_host="b", mqtt_port=1)
    service = EnrollmentService(EnrollmentRepository(engine), fleet, identity, policy, clock, broker)
    yield World(clock, fleet, identity, service, broker)
    engine.dispose()


def test_an_expired_token_enrolls_nobody_but_a_pending_request_outlives_it(world: World) -> None:
    _, secret = world.enrollment.create_token("t", "op", expires_at=T0 + timedelta(hours=1))
    waiting = Signer.generate()
    assert world.ask(secret, waiting, "dev-a").status is EnrollmentStatus.PENDING
    world.clock.now = T0 + timedelta(hours=2)
    with pytest.raises(Unauthenticated, match="expired"):
        world.ask(secret, Signer.generate(), "dev-b")
    assert world.fleet.get_device("dev-b") is None and world.enrollment.list_enrollments() != []
    assert world.ask(secret, waiting, "dev-a").status is EnrollmentStatus.PENDING  # asked again: still waiting
    world.enrollment.approve("dev-a", OPERATOR)
    answer = world.ask(secret, waiting, "dev-a")
    assert answer.status is EnrollmentStatus.APPROVED and answer.identity is not None
    device = world.identity.authenticate(f"Bearer {answer.identity.control_plane_token}")
    assert (device.role, device.device_id) == (Role.DEVICE, "dev-a")
    assert world.broker.calls == [("provision", "dev-a")]
    assert [t.uses for t in world.enrollment.list_tokens()] == [1]  # asking again never used it twice


def test_a_denial_sticks_and_a_takeover_leaves_the_enrolled_identity_alone(world: World) -> None:
    _, auto = world.enrollment.create_token("auto", "op", auto_approve=True)
    owner = Signer.generate()
    first = world.ask(auto, owner, "dev-a")
    assert first.identity is not None
    thief = Signer.generate()
    assert world.ask(auto, thief, "dev-a").status is EnrollmentStatus.PENDING
    world.enrollment.deny("dev-a", OPERATOR, "not ours")
    assert world.ask(auto, thief, "dev-a").status is EnrollmentStatus.DENIED
    with pytest.raises(Conflict):
        world.enrollment.approve("dev-a", OPERATOR)  # nothing pending any more
    # The owner's credential still works, and its key still gets its identity.
    world.identity.authenticate(f"Bearer {first.identity.control_plane_token}")
    assert world.ask(auto, owner, "dev-a").status is EnrollmentStatus.APPROVED
    steps = [e.step for e in world.fleet.list_events("dev-a", 100)]
    assert {"enrolled", "enrollment_requested", "enrollment_denied"} <= set(steps)


def test_rotation_needs_the_devices_own_token_and_its_current_key(world: World) -> None:
    _, auto = world.enrollment.create_token("auto", "op", auto_approve=True)
    old = Signer.generate()
    first = world.ask(auto, old, "dev-a").identity
    assert first is not None
    other = world.ask(auto, Signer.generate(), "dev-b").identity
    assert other is not None
    new = Signer.generate()
    with pytest.raises(Unauthenticated):  # another device's token, even with the right signature
        world.ask(other.control_plane_token, new, "dev-a", previous=old)
    with pytest.raises(Unauthenticated):  # its own token, signed by a key that is not its current one
        world.ask(first.control_plane_token, new, "dev-a", previous=Signer.generate())
    rotated = world.ask(first.control_plane_token, new, "dev-a", previous=old)
    assert rotated.status is EnrollmentStatus.APPROVED and rotated.identity is not None
    with pytest.raises(Unauthenticated):
        world.identity.authenticate(f"Bearer {first.control_plane_token}")  # the replaced credential is dead
    assert ("revoke", "dev-a") in world.broker.calls
    with pytest.raises(Unauthenticated, match="needs an enrollment token"):
        world.ask(rotated.identity.control_plane_token, old, "dev-a")  # the old key is nobody now
    world.enrollment.forget("dev-a")
    with pytest.raises(Unauthenticated):
        world.identity.authenticate(f"Bearer {rotated.identity.control_plane_token}")


# -- what a device's messages may do ------------------------------------------------------------------------------


def messages(world: World, burst: int = 5) -> FleetService:
    limits = MessageLimits(RatePolicy(per_s=1.0, burst=burst))
    return FleetService(world.fleet, Topics(), world.clock, timedelta(seconds=90), limits=limits)


def event_payload(device_id: str, n: int) -> bytes:
    event = DeviceEvent(generation=0, step=EventStep.ERROR, reason=f"e{n}", at=T0)
    return seal(MessageKind.EVENT, device_id, event, T0)


def test_over_its_rate_a_device_is_dropped_with_one_counted_warning_and_others_are_not(world: World) -> None:
    for device_id in ("dev-a", "dev-b"):
        world.fleet.enroll(device_id, "mqtt", {}, None, None, None, T0)
    fleet = messages(world)
    for n in range(50):
        fleet.handle_message("edge/devices/dev-a/events", event_payload("dev-a", n))
    fleet.handle_message("edge/devices/dev-b/events", event_payload("dev-b", 0))
    fleet.drain()  # what the ingest writer does on its thread
    mine = world.fleet.list_events("dev-a", 1000)
    device_events = [e for e in mine if e.source is EventSource.DEVICE]
    noted = [e for e in mine if e.step == "rate_limited"]
    assert len(device_events) == 5 and len(noted) == 1 and "dropped 1 message" in str(noted[0].reason)
    assert [e.reason for e in world.fleet.list_events("dev-b", 10)] == ["e0"]
    world.clock.now = T0 + timedelta(seconds=61)
    for n in range(10):
        fleet.handle_message("edge/devices/dev-a/events", event_payload("dev-a", 100 + n))
    fleet.drain()
    noted = [e for e in world.fleet.list_events("dev-a", 1000) if e.step == "rate_limited"]
    assert len(noted) == 2 and "dropped 45 message" in str(noted[0].reason)  # the 44 counted since, and this one


def test_its_own_events_are_capped_but_what_the_control_plane_recorded_stays(world: World) -> None:
    world.fleet.enroll("dev-a", "mqtt", {}, None, None, None, T0)
    fleet = messages(world, burst=1000)
    fleet.set_labels("dev-a", {"site": "x"}, "op")
    for n in range(30):
        fleet.handle_message("edge/devices/dev-a/events", event_payload("dev-a", n))
    fleet.drain()
    found = world.fleet.list_events("dev-a", 1000)
    assert [e.reason for e in found if e.source is EventSource.DEVICE] == [f"e{n}" for n in range(29, 19, -1)]
    assert [e.step for e in found if e.source is EventSource.CONTROL_PLANE] == ["labels_set"]


def test_unknown_devices_oversized_and_unissued_messages_change_nothing(world: World) -> None:
    fleet = messages(world, burst=1000)
    fleet.handle_message("edge/devices/stranger/events", event_payload("stranger", 0))
    fleet.drain()
    assert world.fleet.get_device("stranger") is None
    world.fleet.enroll("dev-a", "mqtt", {}, None, None, None, T0)
    window = ModelTelemetry(name="m", version=1, requests=5, errors=0)
    telemetry = seal(MessageKind.TELEMETRY, "dev-a", Telemetry(window_s=1, models=[window]), T0)
    fleet.handle_message("edge/devices/dev-a/telemetry", telemetry)
    fleet.drain()
    assert world.fleet.telemetry_windows("dev-a") == []  # m v1 was never sent to it
    huge = event_payload("dev-a", 0).replace(b'"e0"', b'"' + b"x" * 9000 + b'"')
    fleet.handle_message("edge/devices/dev-a/events", huge)
    fleet.drain()
    assert world.fleet.list_events("dev-a", 10) == []
