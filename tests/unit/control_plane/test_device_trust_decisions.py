"""The pure decisions behind device trust: who gets an identity (`decide`), what a report may change
(`check_report`), how fast a device may talk (`admit`). Table-driven; no I/O, no clock."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from control_plane.domain.enrollment import (
    DeviceEnrollment,
    EnrollmentRequest,
    EnrollmentToken,
    Outcome,
    Proofs,
    clock_skew_refusal,
    decide,
    derived_device_id,
    placement,
)
from control_plane.domain.fleet import Device
from control_plane.domain.rates import RatePolicy, admit, idle
from control_plane.domain.reports import (
    MAX_ISSUED_BUILDS,
    builds_in,
    check_report,
    issued_telemetry,
    remember_issued,
)
from edge_agent.protocol import (
    ApplyOutcome,
    ApplyPhase,
    ArtifactChoice,
    ArtifactRef,
    DesiredState,
    EventStep,
    HardwareFacts,
    ModelAssignment,
    ModelHealth,
    ModelStatus,
    ModelTelemetry,
    ReportedState,
    SelfTestSpec,
)
from edge_agent.protocol.enrollment import EnrollmentStatus

NOW = datetime(2026, 1, 1, tzinfo=UTC)
HW = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")
KEY, OTHER = "k" * 44, "o" * 44


def token(**changes: object) -> EnrollmentToken:
    base = EnrollmentToken("t1", "site-a", "d", NOW, "op", None, None, 0, None, False, {"site": "a"})
    return replace(base, **changes)  # type: ignore[arg-type]


def record(
    public_key: str | None = None, request_key: str | None = None, status: EnrollmentStatus = EnrollmentStatus.PENDING
) -> DeviceEnrollment:
    request = EnrollmentRequest(request_key, "t1", HW, status, NOW) if request_key else None
    return DeviceEnrollment("dev-1", public_key, request)


def proofs(t: EnrollmentToken | None = None, device_token_for: str | None = None, signed: bool = False) -> Proofs:
    return Proofs(t, device_token_for, signed)


AUTO = token(auto_approve=True)
ISSUE, PENDING, DENIED, REFUSED = Outcome.ISSUE, Outcome.PENDING, Outcome.DENIED, Outcome.REFUSED


@pytest.mark.parametrize(
    ("rec", "known", "given", "outcome", "approve", "new_request"),
    [
        pytest.param(record(KEY), True, proofs(), ISSUE, False, False, id="approved-key-asks-again"),
        pytest.param(record(OTHER), True, proofs(None, "dev-1", True), ISSUE, True, False, id="rotation-signed"),
        pytest.param(record(OTHER), True, proofs(None, "dev-2", True), REFUSED, False, False, id="others-token"),
        pytest.param(record(OTHER), True, proofs(None, "dev-1"), REFUSED, False, False, id="rotation-unsigned"),
        pytest.param(None, False, proofs(), REFUSED, False, False, id="no-token"),
        pytest.param(None, False, proofs(AUTO), ISSUE, True, True, id="new-device-auto-approved"),
        pytest.param(None, False, proofs(token()), PENDING, False, True, id="new-device-waits"),
        pytest.param(None, True, proofs(AUTO), PENDING, False, True, id="known-id-never-taken-by-a-token"),
        pytest.param(record(OTHER), True, proofs(AUTO), PENDING, False, True, id="new-key-for-enrolled-device"),
        pytest.param(record(None, KEY), False, proofs(token()), PENDING, False, False, id="asks-again-no-new-use"),
        pytest.param(
            record(None, KEY), False, proofs(token(expires_at=NOW)), PENDING, False, False, id="outlives-expiry"
        ),
        pytest.param(record(None, KEY), False, proofs(token(revoked_at=NOW)), REFUSED, False, False, id="dies-revoked"),
        pytest.param(
            record(None, KEY, EnrollmentStatus.DENIED), False, proofs(AUTO), DENIED, False, False, id="denied"
        ),
        pytest.param(None, False, proofs(token(expires_at=NOW)), REFUSED, False, False, id="expired"),
        pytest.param(None, False, proofs(token(max_uses=2, uses=2)), REFUSED, False, False, id="used-up"),
        pytest.param(None, False, proofs(token(revoked_at=NOW)), REFUSED, False, False, id="revoked"),
    ],
)
def test_who_gets_an_identity(
    rec: DeviceEnrollment | None, known: bool, given: Proofs, outcome: Outcome, approve: bool, new_request: bool
) -> None:
    decision = decide("dev-1", KEY, rec, known, given, NOW)
    assert (decision.outcome, decision.approve, decision.new_request) == (outcome, approve, new_request)


def test_expiry_use_and_revocation_are_named() -> None:
    assert token(expires_at=NOW).refusal(NOW) == "enrollment token expired"
    assert token(expires_at=NOW + timedelta(seconds=1)).refusal(NOW) is None
    assert "used up (3 of 3" in str(token(max_uses=3, uses=3).refusal(NOW))
    assert token(revoked_at=NOW).refusal(NOW) == "enrollment token revoked"


def test_a_signed_request_far_from_the_clock_is_refused_and_ids_come_from_keys() -> None:
    assert clock_skew_refusal(NOW - timedelta(minutes=5), NOW) is None
    assert "NTP" in str(clock_skew_refusal(NOW - timedelta(hours=1), NOW))
    assert derived_device_id(KEY) == derived_device_id(KEY) != derived_device_id(OTHER)


def test_placement_is_the_control_planes() -> None:
    fresh = placement(token(channel=None, gpu_class=None), HW, None, None, None)
    assert (fresh.labels, fresh.channel, fresh.gpu_class) == ({"site": "a"}, "mqtt", "cpu-x86_64")
    kept = placement(token(labels={}), HW, "ansible", {"site": "old"}, "jetson-orin")
    assert (kept.labels, kept.channel, kept.gpu_class) == ({"site": "old"}, "ansible", "jetson-orin")
    preset = placement(token(channel="ansible", gpu_class="dgpu-ada"), HW, "mqtt", {"site": "old"}, None)
    assert (preset.labels, preset.channel, preset.gpu_class) == ({"site": "a"}, "ansible", "dgpu-ada")


# -- reports ---------------------------------------------------------------------------------------------------

DEVICE = Device(
    id="dev-1",
    created_at=NOW,
    gpu_class="cpu-x86_64",
    labels={"site": "a"},
    hardware=HW,
    channel="mqtt",
    desired_generation=3,
    issued_builds={"b1": ("m", 1), "b2": ("m", 2)},
)


def report(
    applied: int = 3, models: tuple[tuple[str, int, str], ...] = (("m", 2, "b2"),), **changes: object
) -> ReportedState:
    statuses = [
        ModelStatus(name=n, version=v, build_id=b, active_slot="s", provider="CPU", health=ModelHealth.SERVING)
        for n, v, b in models
    ]
    state = ReportedState(
        device_id="dev-1", agent_version="1", applied_generation=applied, models=statuses, hardware=HW
    )
    return state.model_copy(update=changes)


@pytest.mark.parametrize(
    ("reported", "refusal"),
    [
        pytest.param(report(), None, id="what-was-issued"),
        pytest.param(report(applied=4), "applied generation 4, but generation 3", id="generation-never-issued"),
        pytest.param(report(models=(("m", 9, "b9"),)), "build 'b9' of m v9, never sent to it", id="build-never-sent"),
        pytest.param(report(models=(("m", 9, "b2"),)), "it was sent as m v2", id="version-relabelled"),
        pytest.param(report(models=(("other", 2, "b2"),)), "it was sent as m v2", id="model-relabelled"),
        pytest.param(
            report(last_apply=ApplyOutcome(generation=5, phase=ApplyPhase.SUCCEEDED, at=NOW)),
            "apply of generation 5",
            id="apply-of-a-generation-never-issued",
        ),
        pytest.param(
            report(last_apply=ApplyOutcome(generation=5, phase=ApplyPhase.IN_PROGRESS, at=NOW)),
            "apply of generation 5",
            id="apply-in-progress-of-a-generation-never-issued",
        ),
        # The agent names the generation a forged document claimed when it refuses it: stored, only a claim, so a
        # forged document cannot make the control plane refuse the device's reports.
        pytest.param(
            report(last_apply=ApplyOutcome(generation=5, phase=ApplyPhase.FAILED, step=EventStep.REJECTED, at=NOW)),
            None,
            id="refusal-of-a-generation-never-issued-is-a-claim",
        ),
    ],
)
def test_a_report_is_refused_when_it_names_what_was_never_issued(reported: ReportedState, refusal: str | None) -> None:
    verdict = check_report(DEVICE, reported)
    assert (verdict.refusal is None) == (refusal is None)
    if refusal is not None:
        assert refusal in str(verdict.refusal)


def test_a_refusal_of_a_generation_never_issued_is_listed_as_a_claim() -> None:
    forged = ApplyOutcome(generation=9, phase=ApplyPhase.FAILED, step=EventStep.REJECTED, reason="signature", at=NOW)
    verdict = check_report(DEVICE, report(last_apply=forged))
    assert verdict.refusal is None
    assert verdict.claims == ("a failed apply of generation 9, never issued (newest: 3)",)


def test_claims_change_nothing_and_are_listed() -> None:
    claims = report(labels={"site": "b", "extra": "x"}, channel="ansible").model_copy(
        update={"hardware": HardwareFacts(gpu_class="jetson-orin", arch="aarch64", compute_capability="8.7")}
    )
    verdict = check_report(DEVICE, claims)
    text = " ".join(verdict.claims)
    assert verdict.refusal is None and not verdict.adopt_hardware
    assert "labels extra=x,site=b" in text and "channel ansible" in text and "GPU class jetson-orin" in text
    assert "arch aarch64" in text and "compute_capability 8.7" in text
    assert check_report(DEVICE, report(labels={"site": "a"})).claims == ()  # a subset of what was issued is no claim
    unknown_hardware = replace(DEVICE, hardware=None, gpu_class=None)
    assert check_report(unknown_hardware, report()).adopt_hardware  # first use: the operator recorded none


def test_issued_builds_are_remembered_newest_last_and_bounded() -> None:
    ref = ArtifactRef(url="https://cp/a", sha256="0" * 64, size=1)
    fallback = ArtifactChoice(build_id="onnx-1", artifact_kind="onnx", artifact=ref)
    model = ModelAssignment(
        name="m", version=4, build_id="plan-1", target="jetson-orin", artifact=ref,
        selftest=SelfTestSpec(artifact=ref), fallback=fallback,
    )  # fmt: skip
    document = DesiredState(device_id="dev-1", generation=1, issued_at=NOW, models=[model])
    assert builds_in(document) == [("plan-1", "m", 4), ("onnx-1", "m", 4)]
    many = remember_issued({}, ((f"b{i}", "m", i) for i in range(MAX_ISSUED_BUILDS + 10)))
    assert len(many) == MAX_ISSUED_BUILDS and "b0" not in many and f"b{MAX_ISSUED_BUILDS + 9}" in many
    again = remember_issued(many, [("b10", "m", 10)])
    assert list(again)[-1] == "b10" and len(again) == MAX_ISSUED_BUILDS
    windows = [
        ModelTelemetry(name="m", version=2, requests=1, errors=0),
        ModelTelemetry(name="m", version=7, requests=1, errors=0),
    ]
    assert [w.version for w in issued_telemetry(DEVICE, windows)] == [2]


# -- rates -----------------------------------------------------------------------------------------------------

POLICY = RatePolicy(per_s=2.0, burst=5, note_every=timedelta(seconds=60))


def test_a_burst_then_the_sustained_rate_then_one_note_a_minute() -> None:
    state = None
    allowed = []
    notes = []
    for _ in range(20):  # 20 messages in the same instant
        state, admission = admit(state, NOW, POLICY)
        allowed.append(admission.allowed)
        notes.append(admission.note)
    assert allowed == [True] * 5 + [False] * 15
    assert [n for n in notes if n is not None] == [1]  # the first drop is said at once, the rest counted
    state, admission = admit(state, NOW + timedelta(seconds=0.5), POLICY)  # one token back after 0.5 s
    assert admission.allowed and admission.note is None
    state, admission = admit(state, NOW + timedelta(seconds=0.6), POLICY)
    assert not admission.allowed and admission.note is None
    state, admission = admit(state, NOW + timedelta(seconds=61), POLICY)  # a full bucket again
    assert admission.allowed
    for _ in range(5):
        state, admission = admit(state, NOW + timedelta(seconds=61), POLICY)
    assert admission.note == 16  # every drop since the first note (15) and this one, said a minute after it
    assert not idle(state, NOW + timedelta(seconds=61), POLICY)


def test_a_clock_stepping_back_refills_nothing() -> None:
    state, _ = admit(None, NOW, RatePolicy(per_s=1.0, burst=1))
    state, admission = admit(state, NOW - timedelta(hours=1), RatePolicy(per_s=1.0, burst=1))
    assert not admission.allowed
