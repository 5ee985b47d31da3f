"""PlaybookRunService on a real SQLite database: request validation against the fleet, the queue (cancel while
queued, on_finished once), what host results do to the fleet, and restart recovery. The runner is a stand-in
(named `ScriptedRunner`): ansible-runner itself is exercised by tests/integration/control_plane/test_playbook_runs."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.playbook_run_repository import PlaybookRunRepository
from control_plane.domain.errors import Conflict, InvalidInput
from control_plane.domain.playbook_vars import Declarations, VarSpec, VarType
from control_plane.domain.playbooks import (
    AnsibleConnection,
    HostResult,
    HostStatus,
    PlaybookJob,
    PlaybookName,
    PlaybookOutcome,
    PlaybookRun,
    PlaybookRunRequest,
    RunEvent,
    RunStatus,
)
from control_plane.services.fleet import FleetService
from control_plane.services.playbook_runs import RESTARTED_REASON, PlaybookRunService
from edge_agent.protocol import HardwareFacts, ReportedState, Topics

NOW = datetime(2026, 1, 1, tzinfo=UTC)
LOCAL = AnsibleConnection(connection="local")


class ScriptedRunner:
    """Stand-in for the ansible-runner adapter: answers each job with `answer(job)`, optionally after `gate`."""

    def __init__(self, answer: Callable[[PlaybookJob], PlaybookOutcome]) -> None:
        self.answer = answer
        self.jobs: list[PlaybookJob] = []
        self.gate = threading.Event()
        self.gate.set()

    def check_available(self) -> None:
        return None

    def run(
        self, job: PlaybookJob, on_event: Callable[[RunEvent], None], cancelled: Callable[[], bool]
    ) -> PlaybookOutcome:
        self.jobs.append(job)
        on_event(RunEvent(job.run_id, 1, NOW, "playbook_on_task_start", None, "t", False, False, "task: t"))
        self.gate.wait(10)
        if cancelled():
            return PlaybookOutcome(RunStatus.CANCELLED, tuple(HostResult(h, HostStatus.PENDING) for h in job.hosts))
        return self.answer(job)


def all_ok(job: PlaybookJob) -> PlaybookOutcome:
    return PlaybookOutcome(RunStatus.SUCCEEDED, tuple(HostResult(h, HostStatus.OK) for h in job.hosts), rc=0)


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[FleetRepository, PlaybookRunRepository]]:
    engine = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    migrate(engine)
    fleet = FleetRepository(engine)
    fleet.enroll("dev-1", "ansible", {"site": "a"}, None, None, LOCAL, NOW)
    fleet.enroll("dev-2", "ansible", {"site": "a"}, None, None, LOCAL, NOW)
    fleet.enroll("mq-1", "mqtt", {"site": "a"}, None, None, None, NOW)
    yield fleet, PlaybookRunRepository(engine)
    engine.dispose()


def service(
    stores: tuple[FleetRepository, PlaybookRunRepository],
    runner: ScriptedRunner,
    workers: int = 1,
    woken: list[str] | None = None,
    declared: Declarations | None = None,
) -> PlaybookRunService:
    """The service over a real FleetService (reports go through its accept_report); `woken` lists the devices
    whose report woke the fleet's listeners."""
    fleet, runs = stores
    fleet_service = FleetService(fleet, Topics(), lambda: NOW, timedelta(seconds=60))
    if woken is not None:
        fleet_service.on_report(woken.extend)
    return PlaybookRunService(runs, fleet, runner, lambda: NOW, fleet_service.accept_report, workers, declared)


def wait_final(svc: PlaybookRunService, run_id: str) -> PlaybookRun:
    for _ in range(500):
        run = svc.get(run_id)
        if run.status.final:
            return run
        threading.Event().wait(0.01)
    raise AssertionError(f"run {run_id} did not end")


@pytest.mark.parametrize(
    ("request_", "error", "text"),
    [
        pytest.param(PlaybookRunRequest(PlaybookName.FACTS), InvalidInput, "exactly one", id="neither"),
        pytest.param(PlaybookRunRequest(PlaybookName.FACTS, "site=a", ("dev-1",)), InvalidInput, "exactly one",
                     id="both"),
        pytest.param(PlaybookRunRequest(PlaybookName.FACTS, hosts=("dev-1", "ghost")), InvalidInput, "ghost",
                     id="unknown"),
        pytest.param(PlaybookRunRequest(PlaybookName.FACTS, hosts=("a/b",)), InvalidInput, "hosts", id="bad-id"),
        pytest.param(PlaybookRunRequest(PlaybookName.FACTS, hosts=("mq-1",)), Conflict, "mq-1", id="no-connection"),
        pytest.param(PlaybookRunRequest(PlaybookName.FACTS, "site=b"), InvalidInput, "matches no", id="none-match"),
        pytest.param(PlaybookRunRequest(PlaybookName.FACTS, "site"), InvalidInput, "selector", id="bad-selector"),
    ],
)  # fmt: skip
def test_requests_are_checked_against_the_fleet(
    stores: tuple[FleetRepository, PlaybookRunRepository], request_: PlaybookRunRequest, error: type, text: str
) -> None:
    svc = service(stores, ScriptedRunner(all_ok))
    with pytest.raises(error, match=text):
        svc.submit(request_)
    assert svc.list_runs() == []
    svc.shutdown()


FACTS_VARS: Declarations = {
    PlaybookName.FACTS: {"mqtt": VarSpec("mqtt", VarType.MAP), "n": VarSpec("n", VarType.INT)},
}
PASSWORD = "correct-horse-battery"


@pytest.mark.parametrize(
    ("extra_vars", "text"),
    [
        pytest.param({"ansible_become_pass": "x"}, "extra_vars.ansible_become_pass", id="ansible"),
        pytest.param({"zz": 1}, "does not declare zz; it allows: mqtt, n", id="undeclared"),
        pytest.param({"mqtt": {"host": "{{ lookup('pipe', 'id') }}"}}, "extra_vars.mqtt.host", id="template"),
    ],
)
def test_bad_extra_vars_are_refused_before_anything_is_queued(
    stores: tuple[FleetRepository, PlaybookRunRepository], extra_vars: dict[str, object], text: str
) -> None:
    runner = ScriptedRunner(all_ok)
    svc = service(stores, runner, declared=FACTS_VARS)
    with pytest.raises(InvalidInput, match=re.escape(text)):
        svc.submit(PlaybookRunRequest(PlaybookName.FACTS, hosts=("ghost",), extra_vars=extra_vars))
    svc.shutdown()
    assert svc.list_runs() == [] and runner.jobs == []


def test_the_runner_gets_the_real_values_and_only_redacted_ones_are_stored(
    stores: tuple[FleetRepository, PlaybookRunRepository],
) -> None:
    class LeakyRunner(ScriptedRunner):
        """A playbook that prints the password everywhere it can."""

        def run(
            self, job: PlaybookJob, on_event: Callable[[RunEvent], None], cancelled: Callable[[], bool]
        ) -> PlaybookOutcome:
            self.jobs.append(job)
            leak = f"login with {PASSWORD} refused"
            on_event(RunEvent(job.run_id, 1, NOW, "runner_on_failed", "dev-1", f"Log in ({PASSWORD})", False, True,
                              f"dev-1: failed: Log in: {leak}"))  # fmt: skip
            result = {"echo": {"mqtt": {"password": PASSWORD}}, "said": leak}
            return PlaybookOutcome(RunStatus.FAILED, (HostResult("dev-1", HostStatus.FAILED, result, leak),), 2, leak)

    runner = LeakyRunner(all_ok)
    svc = service(stores, runner, declared=FACTS_VARS)
    given = {"mqtt": {"host": "broker", "password": PASSWORD}, "n": 1}
    run = svc.submit(PlaybookRunRequest(PlaybookName.FACTS, hosts=("dev-1",), extra_vars=given))
    done = wait_final(svc, run.id)
    svc.shutdown()

    assert runner.jobs[0].extra_vars == given
    assert done.extra_vars == {"mqtt": {"host": "broker", "password": "***"}, "n": 1}
    host = done.hosts[0]
    assert host.result == {"echo": {"mqtt": {"password": "***"}}, "said": "login with *** refused"}
    assert (host.message, done.error) == ("login with *** refused", "login with *** refused")
    [event] = svc.events_since(run.id, 0)
    assert (event.task, event.message) == ("Log in (***)", "dev-1: failed: Log in: login with *** refused")
    assert PASSWORD not in repr(svc.list_runs())


def test_a_selector_takes_only_ansible_devices_and_host_vars_reach_the_inventory(
    stores: tuple[FleetRepository, PlaybookRunRepository],
) -> None:
    runner = ScriptedRunner(all_ok)
    svc = service(stores, runner)
    with pytest.raises(InvalidInput, match="mq-1"):
        svc.submit(PlaybookRunRequest(PlaybookName.FACTS, "site=a"), host_vars={"mq-1": {"x": 1}})
    run = svc.submit(PlaybookRunRequest(PlaybookName.FACTS, "site=a"), host_vars={"dev-2": {"edge_bundle_dir": "/b"}})
    done = wait_final(svc, run.id)
    assert [h.host for h in done.hosts] == ["dev-1", "dev-2"] and done.status is RunStatus.SUCCEEDED
    assert runner.jobs[0].hosts == {
        "dev-1": {"ansible_connection": "local"},
        "dev-2": {"ansible_connection": "local", "edge_bundle_dir": "/b"},
    }
    assert [e.message for e in svc.events_since(run.id, 0)] == ["task: t"]
    svc.shutdown()


def test_host_results_feed_the_fleet_and_bad_ones_are_ignored(
    stores: tuple[FleetRepository, PlaybookRunRepository],
) -> None:
    facts = HardwareFacts(gpu_class="dgpu-ada", arch="x86_64", cpu_count=8, memory_mb=1)
    # Generation 0: the only one issued to dev-1 here (a report of one never issued is refused: test_device_trust).
    state = ReportedState(device_id="dev-1", agent_version="1", applied_generation=0, hardware=facts, channel="ansible")

    def answer(job: PlaybookJob) -> PlaybookOutcome:
        return PlaybookOutcome(
            RunStatus.FAILED,
            (
                HostResult("dev-1", HostStatus.CHANGED, {"reported": state.model_dump(mode="json")}),
                HostResult("dev-2", HostStatus.FAILED, {"reported": {"device_id": "dev-2"}, "hardware": 5}, "no"),
            ),
            rc=2,
        )

    fleet, _ = stores
    woken: list[str] = []
    finished: list[PlaybookRun] = []
    svc = service(stores, ScriptedRunner(answer), woken=woken)
    run = svc.submit(
        PlaybookRunRequest(PlaybookName.DEPLOY_MODEL, hosts=("dev-1", "dev-2")), on_finished=finished.append
    )
    done = wait_final(svc, run.id)
    svc.shutdown()

    assert [r.id for r in finished] == [run.id] and finished[0].status is RunStatus.FAILED
    assert (done.rc, done.host("dev-2")) == (2, HostResult("dev-2", HostStatus.FAILED, done.hosts[1].result, "no"))
    dev1, dev2 = fleet.get_device("dev-1"), fleet.get_device("dev-2")
    assert dev1 is not None and dev1.reported is not None and dev1.reported.agent_version == "1"
    assert dev1.gpu_class == "dgpu-ada" and dev1.ansible == LOCAL and dev1.channel == "ansible"
    assert dev2 is not None and dev2.reported is None and dev2.hardware is None
    assert woken == ["dev-1"]


def test_a_queued_run_is_cancelled_at_once_and_never_runs(
    stores: tuple[FleetRepository, PlaybookRunRepository],
) -> None:
    runner = ScriptedRunner(all_ok)
    runner.gate.clear()  # the first run holds the only worker
    svc = service(stores, runner, workers=1)
    finished: list[PlaybookRun] = []
    first = svc.submit(PlaybookRunRequest(PlaybookName.FACTS, hosts=("dev-1",)))
    second = svc.submit(PlaybookRunRequest(PlaybookName.FACTS, hosts=("dev-2",)), on_finished=finished.append)

    cancelled = svc.cancel(second.id)
    runner.gate.set()
    wait_final(svc, first.id)
    svc.shutdown()

    assert cancelled.status is RunStatus.CANCELLED and svc.get(second.id).status is RunStatus.CANCELLED
    assert [r.status for r in finished] == [RunStatus.CANCELLED]
    assert [j.run_id for j in runner.jobs] == [first.id]
    with pytest.raises(Conflict, match="cancelled"):
        svc.cancel(second.id)


def test_a_running_run_is_asked_to_stop(stores: tuple[FleetRepository, PlaybookRunRepository]) -> None:
    runner = ScriptedRunner(all_ok)
    runner.gate.clear()
    svc = service(stores, runner)
    run = svc.submit(PlaybookRunRequest(PlaybookName.FACTS, hosts=("dev-1",)))
    for _ in range(500):
        if runner.jobs:
            break
        threading.Event().wait(0.01)
    assert svc.cancel(run.id).status is RunStatus.RUNNING
    runner.gate.set()
    assert wait_final(svc, run.id).status is RunStatus.CANCELLED
    svc.shutdown()


def test_recover_fails_what_a_previous_process_left(stores: tuple[FleetRepository, PlaybookRunRepository]) -> None:
    _, runs = stores
    left = PlaybookRun(
        "old", PlaybookName.FACTS, RunStatus.RUNNING, (HostResult("dev-1", HostStatus.PENDING),), {}, NOW
    )
    runs.save_run(left)
    runs.save_run(PlaybookRun("done", PlaybookName.FACTS, RunStatus.SUCCEEDED, (), {}, NOW))
    svc = service(stores, ScriptedRunner(all_ok))

    recovered = svc.recover()
    svc.shutdown()

    assert [(r.id, r.status, r.error) for r in recovered] == [("old", RunStatus.FAILED, RESTARTED_REASON)]
    assert svc.get("old").finished_at == NOW and svc.get("done").status is RunStatus.SUCCEEDED
