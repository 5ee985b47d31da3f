"""Instant restore (a rollback to a build still on disk: no download, no reload when still in memory) and the
deadlines on every device step (an apply never hangs; the previous model keeps serving)."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import pytest

from edge_agent.adapters.download import HttpFetcher
from edge_agent.adapters.onnx_runner import OnnxRunnerFactory
from edge_agent.core.deadlines import DeadlineExceeded, Deadlines, DeviceStep, call_with_deadline
from edge_agent.core.layout import MODEL_FILE
from edge_agent.core.ports import ModelRunner
from edge_agent.protocol import ApplyPhase, ArtifactRef, EventStep, RuntimeOptions
from tests.unit.agent.builders import SAMPLE, build_version, expected_output, signed
from tests.unit.agent.conftest import CoreFactory

GATE = threading.Event()  # released at teardown so abandoned worker threads end


@pytest.fixture(autouse=True)
def _release_blocked_workers() -> Iterator[None]:
    GATE.clear()
    yield
    GATE.set()


class CountingFetcher(HttpFetcher):
    def __init__(self, block: bool = False) -> None:
        super().__init__(max_attempts=1)
        self.calls: list[str] = []
        self.block = block

    def fetch(self, artifact: ArtifactRef, dest: Path) -> None:
        self.calls.append(artifact.url)
        if self.block:
            GATE.wait()
        super().fetch(artifact, dest)


class CountingRunners(OnnxRunnerFactory):
    """Counts loads; `block_load` hangs a load, `block_run` returns runners whose inference hangs."""

    def __init__(self) -> None:
        super().__init__(gpu_present=False)
        self.loads: list[Path] = []
        self.block_load = False
        self.block_run = False

    def load(self, path: Path, runtime: RuntimeOptions, kind: str = "onnx") -> ModelRunner:
        self.loads.append(path)
        if self.block_load:
            GATE.wait()
        runner = super().load(path, runtime, kind)
        return _Hanging(runner) if self.block_run else runner


class _Hanging:
    def __init__(self, runner: ModelRunner) -> None:
        self.provider, self.inputs, self.outputs = runner.provider, runner.inputs, runner.outputs
        self._runner = runner

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        GATE.wait()
        return self._runner.run(feeds)


def steps(events: list) -> list[EventStep]:
    return [e.step for e in events]


def served(core) -> tuple[int, int | None]:
    model = core.table.current().models["lin"]
    return model.active.version, model.previous.version if model.previous else None


# -- instant restore ---------------------------------------------------------------------------------------


def test_restoring_the_previous_version_neither_downloads_nor_reloads(tmp_path, make_core: CoreFactory, signer, events):
    fetcher, runners = CountingFetcher(), CountingRunners()
    core = make_core(fetcher=fetcher, runners=runners)
    core.recover()
    v1, v2 = build_version(tmp_path / "art", 1), build_version(tmp_path / "art", 2)
    assert core.handle(signed(signer, 1, [v1])).ok and core.handle(signed(signer, 2, [v2])).ok
    fetches, loads = len(fetcher.calls), len(runners.loads)
    kept_runner = core.table.current().models["lin"].previous.runner
    events.clear()

    result = core.handle(signed(signer, 3, [v1]))

    assert result.ok
    assert (len(fetcher.calls), len(runners.loads)) == (fetches, loads)  # no download, no load
    assert core.table.current().models["lin"].active.runner is kept_runner
    assert served(core) == (1, 2)
    np.testing.assert_allclose(kept_runner.run({"X": SAMPLE})["Y"], expected_output(1), rtol=1e-5)
    assert steps(events) == [
        EventStep.RECEIVED,
        EventStep.VERIFIED,
        EventStep.LOADED,
        EventStep.SELF_TEST_PASSED,
        EventStep.ACTIVATED,
    ]
    assert "no download" in events[1].reason and "not reloaded" in events[2].reason
    assert events[-1].version == 1 and "v1 again, from its previous slot" in events[-1].reason
    assert (core.state.active["lin"].version, core.state.previous["lin"].version) == (1, 2)
    assert core.reported().models[0].previous_version == 2


def test_after_a_restart_the_previous_version_is_restored_from_its_slot(tmp_path, make_core, signer, events):
    v1, v2 = build_version(tmp_path / "art", 1), build_version(tmp_path / "art", 2)
    first = make_core()
    first.recover()
    assert first.handle(signed(signer, 1, [v1])).ok and first.handle(signed(signer, 2, [v2])).ok
    fetcher, runners = CountingFetcher(), CountingRunners()
    core = make_core(fetcher=fetcher, runners=runners)
    core.recover()  # loads v2 only: v1 is on disk, not in memory
    events.clear()

    assert core.handle(signed(signer, 3, [v1])).ok

    assert fetcher.calls == [] and len(runners.loads) == 2  # v2 at recovery, v1 from its slot
    assert runners.loads[-1].parent.name.startswith("v1-") and runners.loads[-1].name == MODEL_FILE
    assert served(core) == (1, 2)
    assert steps(events)[-1] is EventStep.ACTIVATED and "previous slot" in str(events[-1].reason)


def test_a_slot_whose_file_changed_on_disk_is_downloaded_again(tmp_path, make_core, signer, events):
    fetcher = CountingFetcher()
    core = make_core(fetcher=fetcher)
    core.recover()
    v1, v2 = build_version(tmp_path / "art", 1), build_version(tmp_path / "art", 2)
    assert core.handle(signed(signer, 1, [v1])).ok and core.handle(signed(signer, 2, [v2])).ok
    slot = tmp_path / "data" / "slots" / "lin" / core.state.previous["lin"].slot
    (slot / MODEL_FILE).unlink()
    (slot / MODEL_FILE).write_bytes(b"not the model")
    fetches = len(fetcher.calls)

    assert core.handle(signed(signer, 3, [v1])).ok

    assert len(fetcher.calls) == fetches + 2  # model and self-test fetched again
    assert served(core)[0] == 1 and steps(events)[-1] is EventStep.ACTIVATED
    assert "a new download" in str(events[-1].reason)


def test_moving_forward_to_a_new_version_is_activated_not_rolled_back(tmp_path, make_core, signer, events):
    core = make_core()
    core.recover()
    for generation in (1, 2, 3):
        assert core.handle(signed(signer, generation, [build_version(tmp_path / "art", generation)])).ok
    assert steps(events).count(EventStep.ROLLED_BACK) == 0
    assert steps(events).count(EventStep.ACTIVATED) == 3


# -- deadlines ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("step", "deadlines"),
    [
        pytest.param("download", Deadlines(download_s=0.2), id="download"),
        pytest.param("load", Deadlines(load_s=0.2), id="load"),
        pytest.param("self-test", Deadlines(self_test_s=0.2), id="self-test"),
    ],
)
def test_a_step_past_its_deadline_fails_the_apply_and_the_old_model_keeps_serving(
    tmp_path, make_core, signer, events, step, deadlines
):
    fetcher, runners = CountingFetcher(), CountingRunners()
    core = make_core(fetcher=fetcher, runners=runners, deadlines=deadlines)
    core.recover()
    assert core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)])).ok
    fetcher.block = step == "download"
    runners.block_load = step == "load"
    runners.block_run = step == "self-test"

    result = core.handle(signed(signer, 2, [build_version(tmp_path / "art", 2)]))

    reason = f"deadline exceeded in {step} after 0.2 s"
    assert not result.ok and result.reason == reason
    last = core.reported().last_apply
    assert last is not None and last.phase is ApplyPhase.FAILED and last.reason == reason
    assert events[-1].step is EventStep.ERROR and events[-1].reason == reason and events[-1].version == 2
    assert served(core)[0] == 1 and core.state.applied_generation == 1
    np.testing.assert_allclose(
        core.table.current().models["lin"].active.runner.run({"X": SAMPLE})["Y"], expected_output(1), rtol=1e-5
    )


def test_a_hanging_verify_is_cut_by_its_deadline(tmp_path, make_core, signer, events, monkeypatch):
    core = make_core(deadlines=Deadlines(verify_s=0.2))
    core.recover()

    def hang(path: Path, artifact: ArtifactRef) -> str | None:
        GATE.wait()
        return None

    monkeypatch.setattr("edge_agent.core.store.mismatch", hang)
    result = core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)]))

    assert not result.ok and result.reason == "deadline exceeded in verify after 0.2 s"
    assert events[-1].step is EventStep.ERROR


def test_call_with_deadline_returns_results_and_reraises_errors():
    assert call_with_deadline(DeviceStep.LOAD, 5, lambda: 42) == 42
    with pytest.raises(ZeroDivisionError):
        call_with_deadline(DeviceStep.LOAD, 5, lambda: 1 // 0)
    with pytest.raises(DeadlineExceeded, match=r"^deadline exceeded in self-test after 0.05 s$"):
        call_with_deadline(DeviceStep.SELF_TEST, 0.05, GATE.wait)
    assert str(DeadlineExceeded(DeviceStep.LOAD, 120)) == "deadline exceeded in load after 120 s"


def test_default_deadlines_are_the_documented_ones():
    assert Deadlines() == Deadlines(download_s=600, verify_s=120, load_s=300, self_test_s=120)


class _Broken(OnnxRunnerFactory):
    """Loads raise what no step expects (a bug in a port, a thread that could not start)."""

    def __init__(self) -> None:
        super().__init__(gpu_present=False)
        self.broken = False

    def load(self, path: Path, runtime: RuntimeOptions, kind: str = "onnx") -> ModelRunner:
        if self.broken:
            raise RuntimeError("can't start new thread")
        return super().load(path, runtime, kind)


def test_an_unexpected_error_fails_the_generation_and_says_so_instead_of_leaving_it_pending(
    tmp_path, make_core, signer, events
):
    runners = _Broken()
    core = make_core(runners=runners)
    core.recover()
    assert core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)])).ok
    runners.broken = True

    result = core.handle(signed(signer, 2, [build_version(tmp_path / "art", 2)]))

    reason = "the apply raised RuntimeError: can't start new thread"
    assert not result.ok and result.reason == reason
    last = core.reported().last_apply
    assert last is not None and last.phase is ApplyPhase.FAILED and last.reason == reason
    assert core.state.pending is None and core.state.failed_generation == 2
    assert events[-1].step is EventStep.ERROR and events[-1].reason == reason
    assert served(core)[0] == 1 and core.state.applied_generation == 1  # the old model keeps serving
