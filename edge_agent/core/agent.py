"""The agent core: verify a desired state, run the apply pipeline step by step, journal it, switch, report.

Every step is recorded in the journal before it starts, so a fresh core on the same data directory can tell
where a killed one stopped: it serves the last-known-good models at once and resumes the unfinished generation.
A failure at any step leaves the previous models serving. Every device step (download, verify, load, self-test)
runs under a deadline (core.deadlines), so an apply always ends. A build whose artifact is already installed in
a slot (a rollback to the previous version) is restored from that slot without a download, and without a reload
when its runner is still in memory. Must never call a network or runtime library directly: those sit behind the
ports.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edge_agent.core.artifacts import TENSORRT_EP, Choice, Refusal, choose_artifact, unfit
from edge_agent.core.deadlines import DeadlineExceeded, Deadlines, DeviceStep, call_with_deadline
from edge_agent.core.errors import AgentError, FetchError, InferenceInputError, RunnerError, SelfTestError
from edge_agent.core.journal import ApplyStep, Journal, JournalState, PendingApply, SlotRecord
from edge_agent.core.ports import ArtifactFetcher, Clock, EventSink, ModelRunner, RunnerFactory
from edge_agent.core.reconcile import Decision, DecisionKind, plan
from edge_agent.core.selftest import compare, load_case
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable, TableSnapshot
from edge_agent.core.store import MODEL_FILE, SELFTEST_FILE, Store, mismatch, slot_name
from edge_agent.protocol import (
    ApplyOutcome,
    ApplyPhase,
    ArtifactRef,
    DesiredState,
    DeviceEvent,
    EventStep,
    HardwareFacts,
    ModelAssignment,
    ModelHealth,
    ModelStatus,
    ReportedState,
    SignatureError,
    SignedDesiredState,
    Verifier,
)

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# A generation whose apply was interrupted (killed) this many times is recorded as failed, not retried forever.
MAX_INTERRUPTED_ATTEMPTS = 3


@dataclass(frozen=True)
class AgentIdentity:
    device_id: str
    hardware: HardwareFacts
    agent_version: str
    labels: Mapping[str, str]
    serving_url: str | None = None
    channel: str = "mqtt"


@dataclass(frozen=True)
class ApplyResult:
    """What happened to one desired-state document."""

    outcome: DecisionKind
    generation: int
    ok: bool
    reason: str = ""


class StepFailure(AgentError):
    def __init__(self, step: EventStep, reason: str, model: ModelAssignment | None = None) -> None:
        super().__init__(reason)
        self.step = step
        self.reason = reason
        self.model = model


@dataclass(frozen=True)
class _Prepared:
    model: ModelAssignment
    record: SlotRecord
    loaded: LoadedModel
    restored: bool = False  # activated from a slot already on disk, without a download


class AgentCore:
    def __init__(
        self,
        data_dir: Path,
        identity: AgentIdentity,
        verifier: Verifier,
        fetcher: ArtifactFetcher,
        runners: RunnerFactory,
        clock: Clock,
        on_event: EventSink | None = None,
        on_change: Callable[[], None] | None = None,
        journal: Journal | None = None,
        deadlines: Deadlines | None = None,
    ) -> None:
        self.identity = identity
        self.table = ServingTable()
        self._verifier = verifier
        self._fetcher = fetcher
        self._runners = runners
        self._clock = clock
        self._on_event = on_event or (lambda event: None)
        self._on_change = on_change or (lambda: None)
        self._journal = journal or Journal(data_dir)
        self._store = Store(data_dir)
        self._deadlines = deadlines or Deadlines()
        self._lock = threading.RLock()
        self._state = JournalState()

    @property
    def state(self) -> JournalState:
        return self._state

    # -- startup -------------------------------------------------------------------------------------------

    def recover(self, load_models: bool = True) -> SignedDesiredState | None:
        """Serve the journal's last-known-good models; return the desired doc of an interrupted apply, if any.

        `load_models=False` (a one-shot `edge-agent apply`) reads the journal without loading runners.
        """
        with self._lock:
            self._state = self._journal.load()
            self._store.remove_half_installed()
            if load_models:
                self._load_active_from_journal()
            resume = self._interrupted_document()
            self._on_change()
            return resume

    def refresh_from_disk(self) -> bool:
        """Pick up an apply done by another process (`edge-agent apply`); True when serving changed."""
        with self._lock:
            on_disk = self._journal.load()
            if on_disk.applied_generation == self._state.applied_generation and on_disk.active == self._state.active:
                self._state = on_disk
                return False
            self._state = on_disk
            self._load_active_from_journal()
            self._on_change()
            return True

    def _load_active_from_journal(self) -> None:
        current = self.table.current().models
        models: dict[str, ServedModel] = {}
        for name, record in self._state.active.items():
            served = current.get(name)
            if served is not None and served.active.version == record.version:
                models[name] = served
                continue
            loaded = self._load_record(record)
            if loaded is not None:
                models[name] = ServedModel(loaded)
        self.table.swap(TableSnapshot(models, frozenset(self._state.active)))

    def _load_record(self, record: SlotRecord) -> LoadedModel | None:
        path = self._store.slot_dir(record.name, record.slot) / MODEL_FILE
        facts = self.identity.hardware
        stale = unfit(
            record.artifact_kind, record.build_id, record.hardware_key, facts, TENSORRT_EP in facts.available_providers
        )
        if stale is not None:  # e.g. TensorRT was upgraded since the plan was installed: never deserialise it
            log.error("not loading %s v%d: %s", record.name, record.version, stale)
            self._emit(self._state.applied_generation, EventStep.ERROR, reason=f"{record.name}: {stale}")
            return None
        try:
            runner = self._runners.load(path, record.runtime, record.artifact_kind)
        except RunnerError as exc:
            log.error("cannot load %s v%d from %s: %s", record.name, record.version, path, exc)
            self._emit(self._state.applied_generation, EventStep.ERROR, reason=f"{record.name}: {exc}")
            return None
        return LoadedModel(record.name, record.version, record.build_id, runner)

    def _interrupted_document(self) -> SignedDesiredState | None:
        pending, desired = self._state.pending, self._state.desired
        if pending is None:
            return None
        if desired is not None and pending.generation > self._state.applied_generation:
            log.info("generation %d was interrupted at step %s; resuming", pending.generation, pending.step.value)
            return desired
        self._save(self._state.model_copy(update={"pending": None}))
        return None

    # -- the apply path ------------------------------------------------------------------------------------

    def handle(self, signed: SignedDesiredState) -> ApplyResult:
        """Verify, decide, and apply one signed desired state. Never raises for a bad document or model."""
        with self._lock:
            try:
                desired = self._verifier.verify_desired(signed)
            except SignatureError as exc:
                return self._reject(0, f"signature: {exc}")
            decision = plan(desired, self._state, self.identity.device_id, self._choose)
            if decision.kind is DecisionKind.REJECT:
                return self._reject(desired.generation, decision.reason)
            if decision.kind is DecisionKind.NOOP:
                log.info("desired state ignored: %s", decision.reason)
                return ApplyResult(DecisionKind.NOOP, desired.generation, ok=True, reason=decision.reason)
            return self._apply(desired, signed, decision)

    def report_rejected(self, generation: int, reason: str) -> None:
        """Tell the control plane about a message refused before it reached the core (e.g. malformed)."""
        self._emit(generation, EventStep.REJECTED, reason=reason)

    def _reject(self, generation: int, reason: str) -> ApplyResult:
        log.warning("desired state rejected: %s", reason)
        self._emit(generation, EventStep.REJECTED, reason=reason)
        return ApplyResult(DecisionKind.REJECT, generation, ok=False, reason=reason)

    def _apply(self, desired: DesiredState, signed: SignedDesiredState, decision: Decision) -> ApplyResult:
        generation = desired.generation
        attempts = self._attempts(generation)
        self._begin(signed, generation, attempts)
        if attempts > MAX_INTERRUPTED_ATTEMPTS:
            return self._fail(generation, StepFailure(EventStep.ERROR, f"apply interrupted {attempts - 1} times"))
        try:
            prepared = [self._prepare(generation, model) for model in decision.install]
        except StepFailure as failure:
            return self._fail(generation, failure)
        self._commit(desired, decision, prepared)
        return ApplyResult(DecisionKind.APPLY, generation, ok=True)

    def _attempts(self, generation: int) -> int:
        pending = self._state.pending
        return pending.attempts + 1 if pending is not None and pending.generation == generation else 1

    def _begin(self, signed: SignedDesiredState, generation: int, attempts: int) -> None:
        pending = PendingApply(generation=generation, step=ApplyStep.RECEIVED, attempts=attempts)
        self._save(
            self._state.model_copy(
                update={"desired": signed, "pending": pending, "last_apply": self._outcome(generation, None)}
            )
        )
        self._emit(generation, EventStep.RECEIVED)
        self._on_change()

    def _choose(self, model: ModelAssignment) -> Choice | Refusal:
        facts = self.identity.hardware
        return choose_artifact(model, facts, TENSORRT_EP in facts.available_providers)

    def _prepare(self, generation: int, model: ModelAssignment) -> _Prepared:
        choice = self._chosen(generation, model)
        slot = self._installed_slot(generation, model, choice)
        restored = slot is not None
        if slot is None:
            slot = self._download_and_install(generation, model, choice)
        self._mark(generation, ApplyStep.LOAD, model)
        runner, kept = self._runner_for(model, choice, slot / MODEL_FILE, restored)
        how = "kept in memory, not reloaded" if kept else f"provider {runner.provider}"
        self._emit(generation, EventStep.LOADED, model, reason=how)
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
        loaded = LoadedModel(model.name, model.version, choice.build_id, runner)
        return _Prepared(model, record, loaded, restored)

    def _download_and_install(self, generation: int, model: ModelAssignment, choice: Choice) -> Path:
        self._mark(generation, ApplyStep.DOWNLOAD, model)
        self._emit(generation, EventStep.DOWNLOADING, model, reason=f"{choice.kind} build {choice.build_id}")
        model_file = self._stage(generation, model, choice.artifact)
        test_file = self._stage(generation, model, model.selftest.artifact)
        self._emit(generation, EventStep.VERIFIED, model)
        self._mark(generation, ApplyStep.INSTALL, model)
        return self._store.install(model, choice, model_file, test_file)

    def _installed_slot(self, generation: int, model: ModelAssignment, choice: Choice) -> Path | None:
        """The slot that already holds this artifact and its self-test (checked by hash), or None."""
        if not self._store.slot_dir(model.name, slot_name(model, choice)).is_dir():
            return None
        self._mark(generation, ApplyStep.VERIFY, model)
        slot = self._guarded(DeviceStep.VERIFY, model, lambda: self._store.installed(model, choice))
        if slot is not None:
            self._emit(generation, EventStep.VERIFIED, model, reason=f"installed in slot {slot.name}; no download")
        return slot

    def _runner_for(
        self, model: ModelAssignment, choice: Choice, path: Path, restored: bool
    ) -> tuple[ModelRunner, bool]:
        """The runner for this artifact, and whether it was still loaded (a restore of a kept runner)."""
        kept = self._kept_runner(model, choice) if restored else None
        if kept is not None:
            return kept, True
        return self._guarded(DeviceStep.LOAD, model, lambda: self._load(model, choice, path)), False

    def _kept_runner(self, model: ModelAssignment, choice: Choice) -> ModelRunner | None:
        """The runner still in memory for exactly this artifact (version, build, digest and runtime options)."""
        state = self._state
        records = [r for r in (state.active.get(model.name), state.previous.get(model.name)) if r is not None]
        if not any(_same_artifact(r, model, choice) for r in records):
            return None
        served = self.table.current().models.get(model.name)
        for loaded in (served.active, served.previous) if served is not None else ():
            if loaded is not None and loaded.version == model.version and loaded.build_id == choice.build_id:
                return loaded.runner
        return None

    def _guarded(self, step: DeviceStep, model: ModelAssignment, work: Callable[[], _T]) -> _T:
        """`work()` under the step's deadline; an exceeded deadline fails the apply with an `error` event."""
        try:
            return call_with_deadline(step, self._deadlines.of(step), work)
        except DeadlineExceeded as exc:
            raise StepFailure(EventStep.ERROR, str(exc), model) from exc

    def _chosen(self, generation: int, model: ModelAssignment) -> Choice:
        """The artifact this device runs for `model`; says why when it falls back; fails when none fits."""
        choice = self._choose(model)
        if isinstance(choice, Refusal):
            raise StepFailure(EventStep.ERROR, f"{model.name} v{model.version}: {choice.reason}", model)
        if choice.fallback_reason is not None:
            log.warning(
                "%s v%d falls back to %s: %s", model.name, model.version, choice.build_id, choice.fallback_reason
            )
            reason = f"using {choice.kind} build {choice.build_id}: {choice.fallback_reason}"
            self._emit(generation, EventStep.ARTIFACT_FALLBACK, model, reason=reason)
        return choice

    def _stage(self, generation: int, model: ModelAssignment, artifact: ArtifactRef) -> Path:
        dest = self._store.staged(artifact)
        if not (dest.exists() and mismatch(dest, artifact) is None):
            try:
                self._guarded(DeviceStep.DOWNLOAD, model, lambda: self._fetcher.fetch(artifact, dest))
            except FetchError as exc:
                raise StepFailure(EventStep.ERROR, f"download of {artifact.url} failed: {exc}", model) from exc
            self._emit(generation, EventStep.DOWNLOADED, model)
        self._mark(generation, ApplyStep.VERIFY, model)
        wrong = self._guarded(DeviceStep.VERIFY, model, lambda: mismatch(dest, artifact))
        if wrong is not None:
            dest.unlink(missing_ok=True)
            raise StepFailure(EventStep.ERROR, f"artifact {artifact.url} refused: {wrong}", model)
        return dest

    def _load(self, model: ModelAssignment, choice: Choice, path: Path) -> ModelRunner:
        try:
            return self._runners.load(path, choice.runtime, choice.kind)
        except RunnerError as exc:
            raise StepFailure(EventStep.ERROR, f"cannot load {model.name} v{model.version}: {exc}", model) from exc

    def _self_test(self, model: ModelAssignment, choice: Choice, runner: ModelRunner, case_file: Path) -> None:
        try:
            case = load_case(case_file)
            runner.run({spec.name: spec.example() for spec in runner.inputs})  # warm-up
            actual = runner.run(case.inputs)
        except (SelfTestError, RunnerError, InferenceInputError) as exc:
            raise StepFailure(EventStep.SELF_TEST_FAILED, f"self-test could not run: {exc}", model) from exc
        problem = compare(actual, case.outputs, choice.atol, choice.rtol)
        if problem is not None:
            raise StepFailure(EventStep.SELF_TEST_FAILED, f"self-test failed: {problem}", model)

    def _commit(self, desired: DesiredState, decision: Decision, prepared: list[_Prepared]) -> None:
        generation = desired.generation
        self._mark(generation, ApplyStep.COMMIT, None)
        old = self._state
        replaced = [p.model.name for p in prepared if p.model.name in old.active] + list(decision.remove)
        active = {name: old.active[name] for name in decision.keep} | {p.model.name: p.record for p in prepared}
        previous = {n: r for n, r in old.previous.items() if n in active} | {n: old.active[n] for n in replaced}
        previous = {n: r for n, r in previous.items() if n in active}
        outcome = ApplyOutcome(generation=generation, phase=ApplyPhase.SUCCEEDED, at=self._clock())
        update = {"applied_generation": generation, "active": active, "previous": previous}
        self._save(old.model_copy(update={**update, "pending": None, "last_apply": outcome}))
        self._switch(desired, prepared)
        for p in prepared:
            self._emit_activated(generation, p, old.previous.get(p.model.name))
        self._collect_garbage(clear_staging=True)
        self._on_change()

    def _emit_activated(self, generation: int, prepared: _Prepared, before: SlotRecord | None) -> None:
        """`rolled_back` when the version now active is the one that was active before the replaced one."""
        model, provider = prepared.model, prepared.loaded.runner.provider
        if before is not None and before.version == model.version:
            source = f"slot {prepared.record.slot}, no download" if prepared.restored else "downloaded again"
            self._emit(generation, EventStep.ROLLED_BACK, model, reason=f"restored v{model.version} from {source}")
            return
        self._emit(generation, EventStep.ACTIVATED, model, reason=f"provider {provider}")

    def _switch(self, desired: DesiredState, prepared: list[_Prepared]) -> None:
        current = self.table.current().models
        new = {p.model.name: p.loaded for p in prepared}
        models: dict[str, ServedModel] = {}
        for model in desired.models:
            served = current.get(model.name)
            if model.name in new:
                models[model.name] = ServedModel(new[model.name], served.active if served else None)
            elif served is not None:
                models[model.name] = served
        self.table.swap(TableSnapshot(models, frozenset(self._state.active)))

    def _fail(self, generation: int, failure: StepFailure) -> ApplyResult:
        log.error("generation %d failed: %s", generation, failure.reason)
        outcome = self._outcome(generation, failure)
        self._save(
            self._state.model_copy(update={"failed_generation": generation, "pending": None, "last_apply": outcome})
        )
        self._emit(generation, failure.step, failure.model, reason=failure.reason)
        self._collect_garbage(clear_staging=False)
        self._on_change()
        return ApplyResult(DecisionKind.APPLY, generation, ok=False, reason=failure.reason)

    # -- bookkeeping ---------------------------------------------------------------------------------------

    def _outcome(self, generation: int, failure: StepFailure | None) -> ApplyOutcome:
        if failure is None:
            return ApplyOutcome(
                generation=generation, phase=ApplyPhase.IN_PROGRESS, step=EventStep.RECEIVED, at=self._clock()
            )
        return ApplyOutcome(
            generation=generation,
            phase=ApplyPhase.FAILED,
            step=failure.step,
            reason=failure.reason[:2000],
            at=self._clock(),
        )

    def _mark(self, generation: int, step: ApplyStep, model: ModelAssignment | None) -> None:
        pending = self._state.pending
        attempts = pending.attempts if pending is not None else 1
        name = model.name if model is not None else None
        self._save(
            self._state.model_copy(
                update={"pending": PendingApply(generation=generation, step=step, model=name, attempts=attempts)}
            )
        )

    def _save(self, state: JournalState) -> None:
        self._journal.save(state)
        self._state = state

    def _collect_garbage(self, clear_staging: bool) -> None:
        keep = [(r.name, r.slot) for r in (*self._state.active.values(), *self._state.previous.values())]
        self._store.collect_garbage(keep, clear_staging)

    def _emit(
        self, generation: int, step: EventStep, model: ModelAssignment | None = None, reason: str | None = None
    ) -> None:
        event = DeviceEvent(
            generation=generation,
            step=step,
            model=model.name if model else None,
            version=model.version if model else None,
            reason=reason[:2000] if reason else None,
            at=self._clock(),
        )
        try:
            self._on_event(event)
        except Exception:
            log.exception("event sink failed for %s", step.value)

    # -- reporting -----------------------------------------------------------------------------------------

    def reported(self, from_journal: bool = False) -> ReportedState:
        """What this agent serves. `from_journal`: for a one-shot process (`edge-agent apply`) that did not load
        every model itself, a model the journal holds as active counts as serving (the daemon serves it)."""
        state, served = self._state, self.table.current().models
        models = [
            self._model_status(record, served.get(name), state, from_journal) for name, record in state.active.items()
        ]
        return ReportedState(
            device_id=self.identity.device_id,
            agent_version=self.identity.agent_version,
            applied_generation=state.applied_generation,
            last_apply=state.last_apply,
            models=models,
            hardware=self.identity.hardware,
            labels=dict(self.identity.labels),
            channel=self.identity.channel,
            serving_url=self.identity.serving_url,
        )

    @staticmethod
    def _model_status(
        record: SlotRecord, served: ServedModel | None, state: JournalState, from_journal: bool
    ) -> ModelStatus:
        loaded = served is not None and served.active.version == record.version
        running = loaded or (from_journal and served is None)
        previous = state.previous.get(record.name)
        return ModelStatus(
            name=record.name,
            version=record.version,
            build_id=record.build_id,
            active_slot=record.slot,
            provider=served.active.runner.provider if served is not None and loaded else (record.provider or "none"),
            health=ModelHealth.SERVING if running else ModelHealth.FAILED,
            previous_version=previous.version if previous else None,
            artifact_kind=record.artifact_kind,
            fallback_reason=record.fallback_reason,
        )


def _same_artifact(record: SlotRecord, model: ModelAssignment, choice: Choice) -> bool:
    return (
        record.version == model.version
        and record.build_id == choice.build_id
        and record.model_sha256 == choice.artifact.sha256
        and record.runtime == choice.runtime
    )
