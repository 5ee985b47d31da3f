"""The rollout planner over every transition, in virtual time: each case is a script of ticks (seconds after
the start, what devices report, an operator command) and the phase, device statuses and reason it must end in."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import ValidationError

from control_plane.domain.rollout_plan import new_rollout, plan, with_generations
from control_plane.domain.rollout_progress import (
    Action,
    CommandRefused,
    DeviceStatus,
    DeviceTrack,
    DeviceView,
    EventKind,
    Note,
    Operator,
    PreviousModel,
    Publish,
    RolloutPhase,
    RolloutState,
    Target,
    TelemetryWindow,
)
from control_plane.domain.rollout_spec import MaintenanceWindow, RolloutRequest
from control_plane.domain.rollout_steps import split_steps, window_open
from edge_agent.protocol import ApplyOutcome, ApplyPhase, HardwareFacts, ModelHealth, ModelStatus, ReportedState

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)  # a Monday
S = DeviceStatus


def spec(**kw: Any) -> RolloutRequest:
    return RolloutRequest.model_validate({"model": "m", "version": 2, **kw})


CANARY = {"type": "canary", "canary": {"count": 1}, "waves": [{"percent": 50}, {"percent": 50}]}


@dataclass
class Tick:
    at_s: float
    reports: Mapping[str, str] = field(default_factory=dict)  # ok | fail | back | gone | unreachable
    command: Operator | None = None
    telemetry: Mapping[str, tuple[int, int, float]] = field(default_factory=dict)  # requests, errors, p99
    online: bool = True


def reported(device_id: str, outcome: str, generation: int) -> ReportedState:
    version = {"ok": 2, "back": 1}.get(outcome)
    models = (
        []
        if version is None
        else [
            ModelStatus(
                name="m", version=version, build_id="b", active_slot="a", provider="cpu", health=ModelHealth.SERVING
            )
        ]
    )
    failed = ApplyOutcome(generation=generation, phase=ApplyPhase.FAILED, reason="self-test: Y differs", at=T0)
    return ReportedState(
        device_id=device_id,
        agent_version="x",
        applied_generation=0 if outcome == "fail" else generation,
        last_apply=failed if outcome == "fail" else None,
        models=models,
        hardware=HardwareFacts(gpu_class="c", arch="x"),
    )


class Driver:
    """Plays the executor: assigns generations to published devices, keeps each device's latest report."""

    def __init__(self, state: RolloutState) -> None:
        self.state = state
        self.outcomes: dict[str, str] = {}
        self.telemetry: dict[str, tuple[int, int, float]] = {}
        self.actions: list[Action] = []
        self.generation = 10

    def fleet(self, online: bool) -> dict[str, DeviceView]:
        view = {}
        for t in self.state.devices:
            outcome = self.outcomes.get(t.device_id)
            pushed = outcome != "unreachable"
            rep = reported(t.device_id, outcome, t.generation or 0) if outcome and t.generation and pushed else None
            lost = (t.generation, "host unreachable over SSH") if not pushed and t.generation else None
            tel = self.telemetry.get(t.device_id)
            view[t.device_id] = DeviceView(
                online=online,
                reported=rep,
                undelivered=lost,
                new_telemetry=TelemetryWindow(tel[0], tel[1], tel[2]) if tel else None,
                old_telemetry=TelemetryWindow(100, 0, 10.0),
            )
        return view

    def tick(self, tick: Tick) -> list[Action]:
        self.outcomes.update(tick.reports)
        self.telemetry.update(tick.telemetry)
        now = T0 + timedelta(seconds=tick.at_s)
        self.state, actions = plan(self.state, self.fleet(tick.online), now, tick.command)
        gens = {}
        for a in actions:
            if isinstance(a, Publish):
                self.generation += 1
                gens[a.device_id] = self.generation
        self.state = with_generations(self.state, gens)
        self.actions += actions
        return actions

    def statuses(self) -> dict[str, str]:
        return {t.device_id: t.status.value for t in self.state.devices}


def start(request: RolloutRequest, n: int = 4, previous: bool = True) -> Driver:
    tracks = [
        DeviceTrack(f"d{i}", "", S.WAITING, None, None, None, PreviousModel(1, "b1") if previous else None)
        for i in range(n)
    ]
    labels = {f"d{i}": {"tier": "canary" if i == n - 1 else "main"} for i in range(n)}
    driver = Driver(new_rollout("r1", request, tracks, lambda d: labels[d], T0))
    driver.tick(Tick(0))
    return driver


ALL_OK = {f"d{i}": "ok" for i in range(4)}
WAVES_OK = {"d1": "ok", "d2": "ok", "d3": "ok"}
W, P, IP, A, F, TO, RS, RD, RF = (
    "waiting",
    "pending",
    "in_progress",
    "activated",
    "failed",
    "timed_out",
    "restoring",
    "restored",
    "restore_failed",
)
BACK = {f"d{i}": "back" for i in range(4)}


@pytest.mark.parametrize(
    ("request_kw", "script", "phase", "statuses", "reason"),
    [
        pytest.param({}, [Tick(1, ALL_OK)], "succeeded", [A, A, A, A], None, id="all-at-once-succeeds"),
        pytest.param({"strategy": CANARY}, [], "in_progress", [IP, W, W, W], None, id="canary-published-first"),
        pytest.param(
            {"strategy": CANARY}, [Tick(1, {"d0": "ok"})], "in_progress", [A, IP, P, W], None, id="canary-pass-wave-1"
        ),
        pytest.param(
            {"strategy": CANARY},
            [Tick(1, {"d0": "ok"}), *(Tick(s, WAVES_OK) for s in range(2, 6))],
            "succeeded",
            [A, A, A, A],
            None,
            id="canary-then-waves-succeed",
        ),
        pytest.param(
            {"strategy": CANARY},
            [Tick(1, {"d0": "fail"})],
            "rolling_back",
            [RS, W, W, W],
            "gate of canary failed",
            id="canary-fails-abort",
        ),
        pytest.param(
            {"strategy": CANARY, "gates": {"on_fail": "pause"}},
            [Tick(1, {"d0": "unreachable"})],
            "paused",
            [F, W, W, W],
            "gate of canary failed",
            id="canary-undelivered-push-fails-the-gate",
        ),
        pytest.param(
            {"strategy": CANARY},
            [Tick(1, {"d0": "fail"}), Tick(2, {"d0": "unreachable"})],
            "aborted",
            [RF, W, W, W],
            "could not restore d0: host unreachable over SSH",
            id="restore-undelivered-is-restore-failed",
        ),
        pytest.param(
            {"strategy": CANARY},
            [Tick(1, {"d0": "fail"}), Tick(2, {"d0": "back"})],
            "rolled_back",
            [RD, W, W, W],
            "1 device(s) restored",
            id="canary-fails-restored",
        ),
        pytest.param(
            {"strategy": CANARY, "gates": {"on_fail": "pause"}},
            [Tick(1, {"d0": "fail"})],
            "paused",
            [F, W, W, W],
            "gate of canary failed",
            id="gate-pause",
        ),
        pytest.param(
            {"strategy": CANARY, "gates": {"on_fail": "pause"}},
            [Tick(1, {"d0": "fail"}), Tick(2, command=Operator.RESUME)],
            "in_progress",
            [F, IP, P, W],
            None,
            id="resume-after-gate-pause-advances",
        ),
        pytest.param(
            {"strategy": CANARY, "device_deadline_s": 30},
            [Tick(31)],
            "rolling_back",
            [RS, W, W, W],
            "not activated within 30 s",
            id="device-timeout-counts-against-gate",
        ),
        pytest.param(
            {"strategy": CANARY, "device_deadline_s": 30},
            [Tick(31, online=False)],
            "rolling_back",
            [RS, W, W, W],
            "(offline)",
            id="silent-offline-device-times-out",
        ),
        pytest.param(
            {"strategy": CANARY, "device_deadline_s": 30, "gates": {"on_fail": "pause"}},
            [Tick(31), Tick(40, {"d0": "ok"})],
            "paused",
            [A, W, W, W],
            "gate of canary failed",
            id="late-device-recovers-timed-out-to-activated",
        ),
        pytest.param(
            {"strategy": CANARY, "gates": {"max_failed": {"count": 1}}},
            [Tick(1, {"d0": "fail"})],
            "in_progress",
            [F, IP, P, W],
            None,
            id="failure-within-max-failed-passes",
        ),
        pytest.param(
            {"max_unavailable": {"count": 2}}, [], "in_progress", [IP, IP, P, P], None, id="max-unavailable-batch"
        ),
        pytest.param(
            {"max_unavailable": {"count": 2}},
            [Tick(1, {"d0": "ok"})],
            "in_progress",
            [A, IP, IP, P],
            None,
            id="max-unavailable-next-batch",
        ),
        pytest.param(
            {"maintenance_window": {"start": "13:00", "end": "14:00"}},
            [Tick(60)],
            "in_progress",
            [W, W, W, W],
            None,
            id="maintenance-window-waits",
        ),
        pytest.param(
            {"maintenance_window": {"start": "13:00", "end": "14:00"}},
            [Tick(3600)],
            "in_progress",
            [IP, IP, IP, IP],
            None,
            id="maintenance-window-opens",
        ),
        pytest.param(
            {"bake_s": 60, "gates": {"min_requests": 20}},
            [Tick(1, ALL_OK), Tick(30, telemetry={"d0": (5, 0, 10.0)})],
            "in_progress",
            [A, A, A, A],
            None,
            id="insufficient-requests-waits-within-bake",
        ),
        pytest.param(
            {"bake_s": 60, "gates": {"min_requests": 20}},
            [Tick(1, ALL_OK), Tick(62, telemetry={"d0": (5, 0, 10.0)})],
            "rolling_back",
            [RS, RS, RS, RS],
            "only 5 request(s)",
            id="insufficient-requests-at-bake-end-fails",
        ),
        pytest.param(
            {"bake_s": 60, "gates": {"min_requests": 20}},
            [Tick(1, ALL_OK), Tick(62, telemetry={"d0": (25, 0, 10.0)})],
            "succeeded",
            [A, A, A, A],
            None,
            id="telemetry-gate-passes-after-bake",
        ),
        pytest.param(
            {"bake_s": 60, "gates": {"min_requests": 20, "max_p99_ratio": 2}},
            [Tick(1, ALL_OK), Tick(10, telemetry={"d0": (25, 0, 25.0)})],
            "rolling_back",
            [RS, RS, RS, RS],
            "2.5x the previous version's",
            id="p99-ratio-trips",
        ),
        pytest.param(
            {"bake_s": 60, "gates": {"min_requests": 20, "max_error_rate": 0.01}},
            [Tick(1, ALL_OK), Tick(10, telemetry={"d0": (25, 5, 10.0)})],
            "rolling_back",
            [RS, RS, RS, RS],
            "error rate 0.2 over 0.01",
            id="error-rate-trips",
        ),
        pytest.param(
            {"bake_s": 60, "gates": {"max_p99_ms": 50}},
            [Tick(1, ALL_OK), Tick(10, telemetry={"d1": (3, 0, 80.0)})],
            "rolling_back",
            [RS, RS, RS, RS],
            "p99 80 ms over 50 ms",
            id="absolute-p99-trips",
        ),
        pytest.param(
            {"bake_s": 60, "gates": {"min_requests": 20, "max_p99_ms": 50}},
            [Tick(1, ALL_OK), Tick(10, telemetry={"d1": (3, 0, 80.0)})],
            "in_progress",
            [A, A, A, A],
            None,
            id="no-trip-below-min-requests",
        ),
        pytest.param(
            {},
            [Tick(1, {"d0": "ok"}), Tick(2, command=Operator.ABORT), Tick(3, BACK)],
            "rolled_back",
            [RD, RD, RD, RD],
            "aborted by the operator",
            id="operator-abort-restores-everyone",
        ),
        pytest.param(
            {"maintenance_window": {"start": "13:00", "end": "14:00"}},
            [Tick(1, command=Operator.ABORT)],
            "aborted",
            [W, W, W, W],
            "no device had moved",
            id="abort-before-anything-moved",
        ),
        pytest.param(
            {"device_deadline_s": 30},
            [Tick(1, command=Operator.ABORT), Tick(40)],
            "aborted",
            [RF, RF, RF, RF],
            "could not restore",
            id="restore-deadline-aborted",
        ),
        pytest.param(
            {},
            [Tick(1, ALL_OK), Tick(2, command=Operator.ROLLBACK), Tick(3, BACK)],
            "rolled_back",
            [RD, RD, RD, RD],
            "rolled back by the operator",
            id="rollback-of-succeeded",
        ),
        pytest.param(
            {"strategy": CANARY},
            [Tick(1, command=Operator.PAUSE), Tick(2, {"d0": "ok"})],
            "paused",
            [A, W, W, W],
            "paused by the operator",
            id="pause-holds-the-next-step",
        ),
        pytest.param(
            {"strategy": CANARY},
            [Tick(1, command=Operator.PAUSE), Tick(2, {"d0": "ok"}), Tick(3, command=Operator.RESUME)],
            "in_progress",
            [A, IP, P, W],
            None,
            id="resume-continues",
        ),
        pytest.param(
            {},
            [Tick(1, ALL_OK), Tick(2, {"d0": "fail"})],
            "succeeded",
            [A, A, A, A],
            None,
            id="final-phase-never-changes",
        ),
    ],
)
def test_transitions(
    request_kw: dict[str, Any], script: list[Tick], phase: str, statuses: list[str], reason: str | None
) -> None:
    driver = start(spec(**request_kw))
    for tick in script:
        driver.tick(tick)
    assert driver.state.phase.value == phase
    assert list(driver.statuses().values()) == statuses
    if reason is None:
        assert driver.state.reason is None
    else:
        assert reason in (driver.state.reason or "") + " ".join(t.reason or "" for t in driver.state.devices)


@pytest.mark.parametrize(
    ("script", "command", "allowed"),
    [
        pytest.param([], Operator.PAUSE, True, id="pause-in-progress"),
        pytest.param([], Operator.RESUME, False, id="resume-in-progress-refused"),
        pytest.param([], Operator.ABORT, True, id="abort-in-progress"),
        pytest.param([], Operator.ROLLBACK, True, id="rollback-in-progress"),
        pytest.param([Tick(1, command=Operator.PAUSE)], Operator.PAUSE, False, id="pause-paused-refused"),
        pytest.param([Tick(1, command=Operator.PAUSE)], Operator.RESUME, True, id="resume-paused"),
        pytest.param([Tick(1, command=Operator.PAUSE)], Operator.ABORT, True, id="abort-paused"),
        pytest.param([Tick(1, command=Operator.ABORT)], Operator.ABORT, False, id="abort-rolling-back-refused"),
        pytest.param([Tick(1, command=Operator.ABORT)], Operator.PAUSE, False, id="pause-rolling-back-refused"),
        pytest.param([Tick(1, ALL_OK)], Operator.ROLLBACK, True, id="rollback-succeeded"),
        pytest.param([Tick(1, ALL_OK)], Operator.ABORT, False, id="abort-succeeded-refused"),
        pytest.param([Tick(1, ALL_OK)], Operator.RESUME, False, id="resume-succeeded-refused"),
        pytest.param(
            [Tick(1, command=Operator.ABORT), Tick(2, BACK)],
            Operator.ROLLBACK,
            False,
            id="rollback-rolled-back-refused",
        ),
    ],
)
def test_operator_commands(script: list[Tick], command: Operator, allowed: bool) -> None:
    driver = start(spec())
    for tick in script:
        driver.tick(tick)
    before = driver.state
    if allowed:
        driver.tick(Tick(5, command=command))
        assert driver.state.phase is not before.phase
    else:
        with pytest.raises(CommandRefused, match=before.phase.value):
            driver.tick(Tick(5, command=command))
        assert driver.state == before


def test_restore_publishes_only_moved_devices_and_events_name_every_transition() -> None:
    driver = start(spec(strategy=CANARY))
    actions = driver.tick(Tick(1, {"d0": "fail"}))
    assert [a for a in actions if isinstance(a, Publish)] == [Publish("d0", Target.RESTORE)]
    kinds = [a.kind for a in driver.actions if isinstance(a, Note)]
    assert kinds == [
        EventKind.STEP_STARTED,
        EventKind.PUBLISHED,
        EventKind.DEVICE_STATUS,
        EventKind.GATE_FAILED,
        EventKind.ABORTING,
        EventKind.PUBLISHED,
        EventKind.ROLLING_BACK,
        EventKind.PHASE,
    ]
    driver.tick(Tick(2, {"d0": "back"}))
    assert [a.kind for a in driver.actions[-3:] if isinstance(a, Note)] == [
        EventKind.DEVICE_STATUS,
        EventKind.RESTORED,
        EventKind.PHASE,
    ]


def test_restore_without_previous_model_means_model_removed() -> None:
    driver = start(spec(), previous=False)
    driver.tick(Tick(1, command=Operator.ABORT))
    driver.tick(Tick(2, {f"d{i}": "gone" for i in range(4)}))
    assert driver.state.phase is RolloutPhase.ROLLED_BACK


def test_max_unavailable_never_exceeded() -> None:
    driver = start(spec(max_unavailable={"count": 2}, strategy=CANARY | {"canary": {"count": 2}}), n=8)
    done: dict[str, str] = {}
    for second in range(1, 30):
        busy = [t.device_id for t in driver.state.devices if t.status is S.IN_PROGRESS]
        assert len(busy) <= 2
        done.update({d: "ok" for d in busy[:1]})
        driver.tick(Tick(second, dict(done)))
    assert driver.state.phase is RolloutPhase.SUCCEEDED


@pytest.mark.parametrize(
    ("strategy", "n", "expected"),
    [
        pytest.param({"type": "all-at-once"}, 3, ["all"] * 3, id="all-at-once"),
        pytest.param(CANARY, 4, ["canary", "wave-1", "wave-1", "wave-2"], id="canary-count-waves-percent"),
        pytest.param(
            {"type": "canary", "canary": {"percent": 10}},
            5,
            ["canary", "wave-1", "wave-1", "wave-1", "wave-1"],
            id="canary-percent-rounds-up-rest-one-wave",
        ),
        pytest.param(
            {"type": "canary", "canary": {"count": 1, "labels": {"tier": "canary"}}, "waves": [{"count": 1}]},
            3,
            ["wave-1", "wave-1", "canary"],
            id="canary-pinned-to-labels-last-wave-takes-rest",
        ),
    ],
)
def test_split_steps(strategy: dict[str, Any], n: int, expected: list[str]) -> None:
    ids = [f"d{i}" for i in range(n)]
    labels = {d: {"tier": "canary" if i == n - 1 else "main"} for i, d in enumerate(ids)}
    split = split_steps(spec(strategy=strategy), ids, lambda d: labels[d])
    assert [split[d] for d in ids] == expected


@pytest.mark.parametrize(
    ("body", "field_name"),
    [
        pytest.param({"strategy": {"type": "canary"}}, "canary", id="canary-without-amount"),
        pytest.param({"strategy": {"type": "canary", "canary": {}}}, "count or percent", id="canary-empty"),
        pytest.param({"strategy": {"type": "canary", "canary": {"percent": 0}}}, "percent", id="percent-zero"),
        pytest.param({"strategy": {"type": "canary", "canary": {"percent": 150}}}, "percent", id="percent-over-100"),
        pytest.param(
            {"strategy": {"type": "canary", "canary": {"count": 1}, "waves": [{"percent": 60}, {"percent": 60}]}},
            "over 100%",
            id="waves-over-100",
        ),
        pytest.param({"maintenance_window": {"start": "25:00", "end": "01:00"}}, "start", id="window-bad-time"),
        pytest.param({"maintenance_window": {"start": "01:00", "end": "02:00", "days": ["xyz"]}}, "days", id="bad-day"),
        pytest.param({"gates": {"min_requests": 5}}, "gates.min_requests", id="min-requests-without-bake"),
        pytest.param({"gates": {"max_error_rate": 2}}, "max_error_rate", id="error-rate-over-1"),
        pytest.param({"strategy": "yolo"}, "type", id="unknown-strategy"),
    ],
)
def test_request_validation_names_the_field(body: dict[str, Any], field_name: str) -> None:
    with pytest.raises(ValidationError) as info:
        spec(**body)
    text = str(info.value)
    assert field_name in text


@pytest.mark.parametrize(
    ("window", "at", "open_"),
    [
        pytest.param(("13:00", "14:00"), T0.replace(hour=13, minute=30), True, id="inside"),
        pytest.param(("13:00", "14:00"), T0.replace(hour=14), False, id="end-excluded"),
        pytest.param(("22:00", "02:00"), T0.replace(hour=23), True, id="across-midnight-evening"),
        pytest.param(("22:00", "02:00"), T0.replace(hour=1), True, id="across-midnight-morning"),
        pytest.param(("22:00", "02:00"), T0.replace(hour=12), False, id="across-midnight-outside"),
    ],
)
def test_maintenance_window(window: tuple[str, str], at: datetime, open_: bool) -> None:
    assert window_open(MaintenanceWindow(start=window[0], end=window[1]), at) is open_


def test_weekday_window_closed_on_other_days() -> None:
    assert not window_open(MaintenanceWindow(start="00:00", end="23:59", days=("sat", "sun")), T0)
