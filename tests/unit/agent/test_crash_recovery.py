"""Kill the apply at every step (a port raises mid-way, like SIGKILL would stop it), then a fresh core on the
same data directory must serve a consistent model at once and converge to the desired generation.

Both for a plain ONNX assignment and for a TensorRT plan this CPU device refuses, so it installs the fallback:
after recovery the fallback build is what is served, journaled and reported."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import pytest

from edge_agent.adapters.download import HttpFetcher, part_path
from edge_agent.adapters.onnx_runner import OnnxRunnerFactory
from edge_agent.core.journal import ApplyStep, JournalState
from edge_agent.core.journal_file import Journal
from edge_agent.protocol import ArtifactRef, ModelAssignment, RuntimeOptions, Signer
from tests.unit.agent.builders import SAMPLE, build_version, expected_output, signed, with_plan
from tests.unit.agent.conftest import CoreFactory


class SimulatedKill(BaseException):
    """Not an Exception: nothing in the agent may catch it, as nothing can catch SIGKILL."""


class Countdown:
    def __init__(self, kill_at: int | None) -> None:
        self.calls = 0
        self.kill_at = kill_at

    def tick(self) -> None:
        self.calls += 1
        if self.calls == self.kill_at:
            raise SimulatedKill


class KillingJournal(Journal):
    def __init__(self, data_dir: Path, countdown: Countdown) -> None:
        super().__init__(data_dir)
        self.countdown = countdown
        self.steps: list[ApplyStep | None] = []

    def save(self, state: JournalState) -> None:
        self.steps.append(state.pending.step if state.pending else None)
        self.countdown.tick()
        super().save(state)


class KillingFetcher(HttpFetcher):
    """Writes half the bytes to the .part file, then dies."""

    def __init__(self, countdown: Countdown) -> None:
        super().__init__(max_attempts=1)
        self.countdown = countdown

    def fetch(self, artifact: ArtifactRef, dest: Path) -> None:
        if self.countdown.calls + 1 == self.countdown.kill_at:
            source = Path(artifact.url.removeprefix("file://")).read_bytes()
            dest.parent.mkdir(parents=True, exist_ok=True)
            part_path(dest).write_bytes(source[: len(source) // 2])
        self.countdown.tick()
        super().fetch(artifact, dest)


class KillingRunners(OnnxRunnerFactory):
    def __init__(self, countdown: Countdown) -> None:
        super().__init__(gpu_present=False)
        self.countdown = countdown

    def load(self, path: Path, runtime: RuntimeOptions, kind: str = "onnx"):  # type: ignore[no-untyped-def]
        self.countdown.tick()
        runner = super().load(path, runtime, kind)
        outer = self.countdown

        class Runner:
            provider, inputs, outputs = runner.provider, runner.inputs, runner.outputs

            def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
                outer.tick()
                return runner.run(feeds)

        return Runner()


Assign = Callable[[Path, int], ModelAssignment]


def plain(root: Path, version: int) -> ModelAssignment:
    return build_version(root, version)


def plan_with_fallback(root: Path, version: int) -> ModelAssignment:
    return with_plan(build_version(root, version))


ASSIGNMENTS = [pytest.param(plain, id="onnx"), pytest.param(plan_with_fallback, id="plan-refused-fallback")]


def journal_saves_of_one_apply(
    tmp_path: Path, make_core: CoreFactory, signer: Signer, assign: Assign = plain
) -> list[ApplyStep | None]:
    journal = KillingJournal(tmp_path / "data", Countdown(None))
    core = make_core(journal=journal, data_dir=tmp_path / "data")
    core.recover()
    assert core.handle(signed(signer, 1, [assign(tmp_path / "art", 1)])).ok
    journal.steps.clear()
    assert core.handle(signed(signer, 2, [assign(tmp_path / "art", 2)])).ok
    return journal.steps


def test_every_step_of_the_apply_is_journaled(tmp_path, make_core, signer):
    steps = journal_saves_of_one_apply(tmp_path, make_core, signer)
    for step in (ApplyStep.RECEIVED, ApplyStep.DOWNLOAD, ApplyStep.VERIFY, ApplyStep.INSTALL, ApplyStep.LOAD):
        assert step in steps
    assert steps[-1] is None  # the commit clears the pending step


def kill_points(n_saves: int) -> list[tuple[str, int]]:
    return [("journal", k) for k in range(1, n_saves + 1)] + [
        ("fetch", 1),
        ("fetch", 2),
        ("load", 1),
        ("run", 2),  # the self-test run (1 is the warm-up)
    ]


@pytest.mark.parametrize("assign", ASSIGNMENTS)
def test_killed_at_any_step_a_fresh_core_recovers_and_converges(tmp_path, make_core, signer, assign):
    n_saves = len(journal_saves_of_one_apply(tmp_path / "count", make_core, signer, assign))
    for index, (port, k) in enumerate(kill_points(n_saves)):
        root = tmp_path / f"case{index}"
        _run_case(root, functools.partial(make_core, data_dir=root / "data"), signer, port, k, assign)


def _run_case(root: Path, make: CoreFactory, signer: Signer, port: str, k: int, assign: Assign) -> None:
    what = f"killed at {port} call {k}"
    data = root / "data"
    first = make(journal=Journal(data))
    first.recover()
    assert first.handle(signed(signer, 1, [assign(root / "art", 1)])).ok, what

    countdown = Countdown(None)
    ports = {
        "journal": {"journal": KillingJournal(data, countdown)},
        "fetch": {"fetcher": KillingFetcher(countdown)},
        "load": {"runners": KillingRunners(countdown)},
        "run": {"runners": KillingRunners(countdown)},
    }[port]
    dying = make(**ports)
    dying.recover()
    countdown.calls, countdown.kill_at = 0, k  # count only the apply's calls
    desired = signed(signer, 2, [assign(root / "art", 2)])
    with pytest.raises(SimulatedKill):
        dying.handle(desired)

    fresh = make(journal=Journal(data))
    resume = fresh.recover()
    served = fresh.table.current().models["lin"].active
    assert served.version == fresh.state.active["lin"].version, what
    np.testing.assert_allclose(served.runner.run({"X": SAMPLE})["Y"], expected_output(served.version), rtol=1e-5)
    assert fresh.table.current().ready, what
    assert not list((data / "slots").glob("*/*.tmp")), what
    if resume is not None:
        assert resume == desired, what
        assert fresh.handle(resume).ok, what
    else:  # killed before or after the apply was journaled: the broker redelivers the retained document
        assert fresh.handle(desired).ok, what
    assert fresh.state.applied_generation == 2 and fresh.state.pending is None, what
    assert fresh.table.current().models["lin"].active.version == 2, what
    # The build in use is the ONNX one (the fallback, where a plan was refused): journaled and reported.
    record = fresh.state.active["lin"]
    assert (record.build_id, record.artifact_kind) == ("b2", "onnx"), what
    assert (record.fallback_reason is not None) == (assign is plan_with_fallback), what
    assert [(m.build_id, m.health.value) for m in fresh.reported().models] == [("b2", "serving")], what
