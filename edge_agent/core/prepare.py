"""The first half of an apply transaction: make one model ready to serve, without serving it.

For each model to install: choose the artifact this device runs (or its fallback, saying why), take it from the
slot that already holds it (a restore: no download) or download, verify and install it, load a runner (or keep the
one still in memory), warm it up and self-test it. Every step is journaled before it begins and every device step
runs under its deadline (core.deadlines). A failure raises StepFailure with the event to send; nothing here
touches the serving table or commits anything (core.transaction does).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edge_agent.core.artifacts import Choice, Refusal
from edge_agent.core.context import CoreContext
from edge_agent.core.deadlines import DeadlineExceeded, DeviceStep, call_with_deadline
from edge_agent.core.errors import AgentError, FetchError, InferenceInputError, RunnerError, SelfTestError
from edge_agent.core.journal import ApplyStep, JournalState, SlotRecord
from edge_agent.core.layout import MODEL_FILE, SELFTEST_FILE, slot_name
from edge_agent.core.ports import ModelRunner
from edge_agent.core.selftest import compare, load_case
from edge_agent.core.serving_table import LoadedModel, TableSnapshot
from edge_agent.protocol import ArtifactRef, EventStep, ModelAssignment

log = logging.getLogger(__name__)
_T = TypeVar("_T")


class StepFailure(AgentError):
    """A step of an apply failed: `step` is the event that says so, `reason` why."""

    def __init__(self, step: EventStep, reason: str, model: ModelAssignment | None = None) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.model = model


@dataclass(frozen=True)
class Prepared:
    """A model ready to be switched in: its journal record and its loaded runner."""

    model: ModelAssignment
    record: SlotRecord
    loaded: LoadedModel
    restored: bool = False  # activated from a slot already on disk, without a download


def same_artifact(record: SlotRecord, model: ModelAssignment, choice: Choice) -> bool:
    """The journal record is of exactly this artifact: version, build, digest and runtime options."""
    return (
        record.version == model.version
        and record.build_id == choice.build_id
        and record.model_sha256 == choice.artifact.sha256
        and record.runtime == choice.runtime
    )


def kept_runner(
    state: JournalState, snapshot: TableSnapshot, model: ModelAssignment, choice: Choice
) -> ModelRunner | None:
    """The runner still in memory (active or previous) for exactly this artifact, or None. Pure."""
    records = [r for r in (state.active.get(model.name), state.previous.get(model.name)) if r is not None]
    if not any(same_artifact(r, model, choice) for r in records):
        return None
    served = snapshot.models.get(model.name)
    for loaded in (served.active, served.previous) if served is not None else ():
        if loaded is not None and loaded.version == model.version and loaded.build_id == choice.build_id:
            return loaded.runner
    return None


class Preparer:
    def __init__(self, context: CoreContext) -> None:
        self._ctx = context

    def prepare(self, generation: int, model: ModelAssignment) -> Prepared:
        """`model` installed, loaded and self-tested; StepFailure when any step fails."""
        choice = self._chosen(generation, model)
        slot = self._installed_slot(generation, model, choice)
        restored = slot is not None
        if slot is None:
            slot = self._download_and_install(generation, model, choice)
        self._mark(generation, ApplyStep.LOAD, model)
        runner, kept = self._runner_for(model, choice, slot / MODEL_FILE, restored)
        how = "kept in memory, not reloaded" if kept else f"provider {runner.provider}"
        self._emit(generation, EventStep.LOADED, model, how)
        self._mark(generation, ApplyStep.SELF_TEST, model)
        self._guarded(DeviceStep.SELF_TEST, model, lambda: self._self_test(model, choice, runner, slot / SELFTEST_FILE))
        self._emit(generation, EventStep.SELF_TEST_PASSED, model)
        record = SlotRecord(
            name=model.name,
            version=model.version,
            build_id=choice.build_id,
            slot=slot_name(model, choice),
            model_sha256=choice.artifact.sha256,
            runtime=choice.runtime,
            provider=runner.provider,
            artifact_kind=choice.kind,
            fallback_reason=choice.fallback_reason,
            hardware_key=choice.hardware_key,
        )
        return Prepared(model, record, LoadedModel(model.name, model.version, choice.build_id, runner), restored)

    def _mark(self, generation: int, step: ApplyStep, model: ModelAssignment) -> None:
        self._ctx.ledger.mark(generation, step, model.name)

    def _emit(self, generation: int, step: EventStep, model: ModelAssignment, reason: str | None = None) -> None:
        self._ctx.events.emit(generation, step, model, reason=reason)

    def _chosen(self, generation: int, model: ModelAssignment) -> Choice:
        """The artifact this device runs for `model`; says why when it falls back; fails when none fits."""
        choice = self._ctx.identity.choose(model)
        if isinstance(choice, Refusal):
            raise StepFailure(EventStep.ERROR, f"{model.name} v{model.version}: {choice.reason}", model)
        if choice.fallback_reason is not None:
            log.warning(
                "%s v%d falls back to %s: %s", model.name, model.version, choice.build_id, choice.fallback_reason
            )
            reason = f"using {choice.kind.value} build {choice.build_id}: {choice.fallback_reason}"
            self._emit(generation, EventStep.ARTIFACT_FALLBACK, model, reason)
        return choice

    def _installed_slot(self, generation: int, model: ModelAssignment, choice: Choice) -> Path | None:
        """The slot that already holds this artifact and its self-test (checked by hash), or None."""
        store = self._ctx.ports.store
        if not store.has_slot(model.name, slot_name(model, choice)):
            return None
        self._mark(generation, ApplyStep.VERIFY, model)
        slot = self._guarded(DeviceStep.VERIFY, model, lambda: store.installed(model, choice))
        if slot is not None:
            self._emit(generation, EventStep.VERIFIED, model, f"installed in slot {slot.name}; no download")
        return slot

    def _download_and_install(self, generation: int, model: ModelAssignment, choice: Choice) -> Path:
        self._mark(generation, ApplyStep.DOWNLOAD, model)
        self._emit(generation, EventStep.DOWNLOADING, model, f"{choice.kind.value} build {choice.build_id}")
        model_file = self._stage(generation, model, choice.artifact)
        test_file = self._stage(generation, model, model.selftest.artifact)
        self._emit(generation, EventStep.VERIFIED, model)
        self._mark(generation, ApplyStep.INSTALL, model)
        return self._ctx.ports.store.install(model, choice, model_file, test_file)

    def _stage(self, generation: int, model: ModelAssignment, artifact: ArtifactRef) -> Path:
        """The artifact's verified bytes in staging: downloaded (resumed) unless already there."""
        store, fetcher = self._ctx.ports.store, self._ctx.ports.fetcher
        dest = store.staged(artifact)
        if not store.holds(dest, artifact):
            try:
                self._guarded(DeviceStep.DOWNLOAD, model, lambda: fetcher.fetch(artifact, dest))
            except FetchError as exc:
                raise StepFailure(EventStep.ERROR, f"download of {artifact.url} failed: {exc}", model) from exc
            self._emit(generation, EventStep.DOWNLOADED, model)
        self._mark(generation, ApplyStep.VERIFY, model)
        wrong = self._guarded(DeviceStep.VERIFY, model, lambda: store.mismatch(dest, artifact))
        if wrong is not None:
            store.discard(dest)
            raise StepFailure(EventStep.ERROR, f"artifact {artifact.url} refused: {wrong}", model)
        return dest

    def _runner_for(
        self, model: ModelAssignment, choice: Choice, path: Path, restored: bool
    ) -> tuple[ModelRunner, bool]:
        """The runner for this artifact, and whether it was still loaded (a restore of a kept runner)."""
        ctx = self._ctx
        kept = kept_runner(ctx.ledger.state, ctx.table.current(), model, choice) if restored else None
        if kept is not None:
            return kept, True
        return self._guarded(DeviceStep.LOAD, model, lambda: self._load(model, choice, path)), False

    def _load(self, model: ModelAssignment, choice: Choice, path: Path) -> ModelRunner:
        try:
            return self._ctx.ports.runners.load(path, choice.runtime, choice.kind)
        except RunnerError as exc:
            raise StepFailure(EventStep.ERROR, f"cannot load {model.name} v{model.version}: {exc}", model) from exc

    @staticmethod
    def _self_test(model: ModelAssignment, choice: Choice, runner: ModelRunner, case_file: Path) -> None:
        try:
            case = load_case(case_file)
            runner.run({spec.name: spec.example() for spec in runner.inputs})  # warm-up
            actual = runner.run(case.inputs)
        except (SelfTestError, RunnerError, InferenceInputError) as exc:
            raise StepFailure(EventStep.SELF_TEST_FAILED, f"self-test could not run: {exc}", model) from exc
        problem = compare(actual, case.outputs, choice.atol, choice.rtol)
        if problem is not None:
            raise StepFailure(EventStep.SELF_TEST_FAILED, f"self-test failed: {problem}", model)

    def _guarded(self, step: DeviceStep, model: ModelAssignment, work: Callable[[], _T]) -> _T:
        """`work()` under the step's deadline; an exceeded deadline fails the apply with an `error` event."""
        try:
            return call_with_deadline(step, self._ctx.deadlines.of(step), work)
        except DeadlineExceeded as exc:
            raise StepFailure(EventStep.ERROR, str(exc), model) from exc
