"""`edge-agent enroll` without a network: the key pair it makes and keeps, what it sends, how it waits while
pending (jittered, capped backoff with an injected clock), what it writes, and the bounds of the wire messages."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from edge_agent.core.backoff import next_delay
from edge_agent.core.errors import EnrollmentError
from edge_agent.enrollment import Enrollment, EnrollmentDenied, EnrollOptions
from edge_agent.protocol import HardwareFacts, ModelTelemetry, ReportedState, Signer, Telemetry, Verifier
from edge_agent.protocol.enrollment import (
    DeviceIdentity,
    EnrollAnswer,
    EnrollmentStatus,
    EnrollRequest,
    signed_request,
)

HW = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")
NOW = datetime(2026, 3, 1, tzinfo=UTC)
CP_KEY = Signer.generate().public_key_b64


def identity(device_id: str = "dev-1", token: str = "edge_" + "t" * 40) -> DeviceIdentity:
    return DeviceIdentity(
        device_id=device_id,
        mqtt_username=device_id,
        mqtt_password="p" * 32,
        mqtt_host="broker.example",
        mqtt_port=8883,
        control_plane_public_key=CP_KEY,
        control_plane_token=token,
    )


def answer(status: EnrollmentStatus, with_identity: bool = False) -> EnrollAnswer | EnrollmentError:
    return EnrollAnswer(
        status=status,
        device_id="dev-1",
        message=f"it is {status.value}",
        retry_after_s=30 if status is EnrollmentStatus.PENDING else None,
        identity=identity() if with_identity else None,
    )


@dataclass
class ScriptedControlPlane:
    """Answers in order; records what it was asked and with which credential."""

    answers: list[EnrollAnswer | EnrollmentError]
    asked: list[tuple[EnrollRequest, str]] = field(default_factory=list)

    def ask(self, request: EnrollRequest, credential: str) -> EnrollAnswer:
        self.asked.append((request, credential))
        next_answer = self.answers.pop(0)
        if isinstance(next_answer, EnrollmentError):
            raise next_answer
        return next_answer


@dataclass
class VirtualTime:
    now: float = 0.0
    slept: list[float] = field(default_factory=list)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "agent.yaml").write_text(yaml.safe_dump({"data_dir": "/var/lib/x", "serving": {"port": 8500}}))
    yield tmp_path


def enrollment(home: Path, plane: ScriptedControlPlane, clock: VirtualTime, **options: object) -> Enrollment:
    opts = EnrollOptions(
        url="https://cp.example/", config_path=home / "agent.yaml", token="enroll_x", device_id="dev-1"
    )
    opts = EnrollOptions(**{**opts.__dict__, **options})  # type: ignore[arg-type]
    return Enrollment(
        opts, HW, plane, say=lambda _text: None, sleep=clock.sleep, monotonic=lambda: clock.now, draw=lambda: 1.0,
        clock=lambda: NOW,
    )  # fmt: skip


def test_pending_then_approved_waits_backs_off_and_writes_the_identity_for_this_user_only(home: Path) -> None:
    pending = answer(EnrollmentStatus.PENDING)
    plane = ScriptedControlPlane([pending, EnrollmentError("connection refused"), pending, pending,
                                  answer(EnrollmentStatus.APPROVED, with_identity=True)])  # fmt: skip
    clock = VirtualTime()
    got = enrollment(home, plane, clock, poll_initial_s=5.0, poll_max_s=40.0).run()
    assert got.device_id == "dev-1"
    assert clock.slept == [30.0, 10.0, 30.0, 40.0]  # the server's hint while pending, doubling, capped
    keys = {request.public_key for request, _ in plane.asked}
    assert len(keys) == 1 and {credential for _, credential in plane.asked} == {"enroll_x"}
    for request, _ in plane.asked:  # each request proves the key: signed by it, over everything it says
        Verifier(request.public_key).verify(request.signed_bytes(), request.signature)
    written = yaml.safe_load((home / "agent.yaml").read_text())
    assert written["data_dir"] == "/var/lib/x" and written["serving"] == {"port": 8500}  # kept
    assert written["mqtt"] == {"username": "dev-1", "password": "p" * 32, "topic_prefix": "edge",
                               "host": "broker.example", "port": 8883}  # fmt: skip
    assert (written["control_plane_url"], written["control_plane_public_key"]) == ("https://cp.example", CP_KEY)
    key_file = Path(written["device_key_file"])
    assert Signer.from_pem(key_file.read_bytes()).public_key_b64 in keys
    assert (home / "agent.yaml").stat().st_mode & 0o777 == 0o600 and key_file.stat().st_mode & 0o777 == 0o600
    assert b"PRIVATE KEY" not in b"".join(r.model_dump_json().encode() for r, _ in plane.asked)


def test_a_second_run_asks_with_the_same_key(home: Path) -> None:
    first = ScriptedControlPlane([EnrollmentError("refused (401): unknown enrollment token", permanent=True)])
    with pytest.raises(EnrollmentError, match="unknown enrollment token"):
        enrollment(home, first, VirtualTime()).run()
    second = ScriptedControlPlane([answer(EnrollmentStatus.APPROVED, with_identity=True)])
    enrollment(home, second, VirtualTime()).run()
    assert first.asked[0][0].public_key == second.asked[0][0].public_key


def test_a_denied_device_stops_asking_and_writes_nothing(home: Path) -> None:
    plane = ScriptedControlPlane([answer(EnrollmentStatus.PENDING), answer(EnrollmentStatus.DENIED)])
    with pytest.raises(EnrollmentDenied, match="it is denied; not asking again"):
        enrollment(home, plane, VirtualTime()).run()
    assert plane.answers == [] and "mqtt" not in yaml.safe_load((home / "agent.yaml").read_text())


def test_waiting_gives_up_at_the_timeout(home: Path) -> None:
    plane = ScriptedControlPlane([answer(EnrollmentStatus.PENDING)] * 10)
    clock = VirtualTime()
    with pytest.raises(EnrollmentError, match="gave up after waiting 100 s"):
        enrollment(home, plane, clock, wait_timeout_s=100.0).run()
    assert sum(clock.slept) <= 100


def test_a_rotation_signs_with_the_current_key_and_replaces_it(home: Path) -> None:
    enrollment(home, ScriptedControlPlane([answer(EnrollmentStatus.APPROVED, with_identity=True)]), VirtualTime()).run()
    config = yaml.safe_load((home / "agent.yaml").read_text())
    old = Signer.from_pem(Path(config["device_key_file"]).read_bytes())
    plane = ScriptedControlPlane([answer(EnrollmentStatus.APPROVED, with_identity=True)])
    enrollment(home, plane, VirtualTime(), rotate=True, token=None).run()
    ((request, credential),) = plane.asked
    assert credential == config["control_plane_token"]  # the device's own token, no enrollment token
    assert request.previous_signature is not None
    Verifier(old.public_key_b64).verify(request.signed_bytes(), request.previous_signature)
    new = Signer.from_pem(Path(config["device_key_file"]).read_bytes())
    assert new.public_key_b64 == request.public_key != old.public_key_b64
    assert not Path(config["device_key_file"] + ".new").exists()


def test_a_rotation_needs_an_enrolled_device(home: Path) -> None:
    with pytest.raises(EnrollmentError, match="--rotate needs an enrolled"):
        enrollment(home, ScriptedControlPlane([]), VirtualTime(), rotate=True, token=None).run()


@pytest.mark.parametrize(
    ("attempt", "hint", "draw", "expected"),
    [
        pytest.param(0, None, 1.0, 5.0, id="first"),
        pytest.param(3, None, 1.0, 40.0, id="doubles"),
        pytest.param(30, None, 1.0, 300.0, id="capped"),
        pytest.param(0, 60.0, 1.0, 60.0, id="server-hint"),
        pytest.param(0, 1e6, 1.0, 300.0, id="hint-capped"),
        pytest.param(2, None, 0.0, 10.0, id="jitter-lower-half-bound"),
    ],
)
def test_backoff(attempt: int, hint: float | None, draw: float, expected: float) -> None:
    assert next_delay(attempt, 5.0, 300.0, draw, hint) == expected


# -- the wire messages are bounded -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    ["ftp://x", "http://", "http://user:pw@host:1", "http://host:99999", "http://host/?q=1", "http://ho st", "x" * 600],
)
def test_a_reported_serving_url_must_be_a_plain_http_url(url: str) -> None:
    with pytest.raises(ValidationError):
        ReportedState(device_id="d", agent_version="1", applied_generation=0, hardware=HW, serving_url=url)
    ok = ReportedState(device_id="d", agent_version="1", applied_generation=0, hardware=HW, serving_url="http://h:1/x")
    assert ok.serving_url == "http://h:1/x"


def test_telemetry_and_reports_are_bounded() -> None:
    window = ModelTelemetry(name="m", version=1, requests=1, errors=0)
    with pytest.raises(ValidationError):
        Telemetry(window_s=1, models=[window] * 33)
    with pytest.raises(ValidationError):
        ModelTelemetry(name="m", version=1, requests=2**63, errors=0)
    with pytest.raises(ValidationError):
        ReportedState(device_id="d", agent_version="v" * 65, applied_generation=0, hardware=HW)
    with pytest.raises(ValidationError):
        HardwareFacts(gpu_class="c", arch="a", available_providers=["p"] * 17)


def test_an_enrollment_request_carries_a_real_key_and_a_signature_over_what_it_says() -> None:
    key = Signer.generate()
    request = signed_request(key, HW, NOW, "dev-1")
    Verifier(key.public_key_b64).verify(request.signed_bytes(), request.signature)
    moved = request.model_copy(update={"device_id": "dev-2"})
    with pytest.raises(Exception, match="does not verify"):
        Verifier(key.public_key_b64).verify(moved.signed_bytes(), moved.signature)
    with pytest.raises(ValidationError):
        EnrollRequest.model_validate(request.model_dump() | {"public_key": "A" * 44})


def test_an_identity_for_a_tls_broker_makes_the_agent_verify_the_broker_against_its_ca(home: Path) -> None:
    ca = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"
    approved = EnrollAnswer(
        status=EnrollmentStatus.APPROVED,
        device_id="dev-1",
        message="approved",
        identity=identity().model_copy(update={"broker_ca_pem": ca}),
    )
    enrollment(home, ScriptedControlPlane([approved]), VirtualTime()).run()
    written = yaml.safe_load((home / "agent.yaml").read_text())
    assert Path(written["mqtt"]["tls_ca_file"]).read_text() == ca
