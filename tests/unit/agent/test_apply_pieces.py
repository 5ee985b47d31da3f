"""The pure pieces of the agent core, table by table: resuming an interrupted apply, counting its attempts, the
slots a commit keeps, the serving table after a switch, activated or rolled back, the slots garbage collection
spares, what a model's status says, which runner a restore reuses; and the ledger and the event emitter with
in-memory ports. No files, no onnxruntime: `FakeRunner` stands in for a loaded model (named as such)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
import pytest

from edge_agent.core.artifacts import Choice, primary_choice
from edge_agent.core.commit import Slots, activation, next_slots, switched
from edge_agent.core.context import AgentIdentity
from edge_agent.core.errors import JournalError
from edge_agent.core.events import MAX_REASON, EventEmitter
from edge_agent.core.garbage import slots_in_use
from edge_agent.core.journal import ApplyStep, JournalState, PendingApply, SlotRecord
from edge_agent.core.ledger import Ledger
from edge_agent.core.prepare import Prepared, kept_runner
from edge_agent.core.reconcile import Decision, DecisionKind
from edge_agent.core.recovery import Interrupted, interrupted
from edge_agent.core.reporting import model_status, reported_state
from edge_agent.core.serving_table import LoadedModel, ServedModel, TableSnapshot
from edge_agent.core.tensors import TensorSpec
from edge_agent.core.transaction import attempts
from edge_agent.protocol import (
    ArtifactRef,
    DesiredState,
    DeviceEvent,
    EventStep,
    HardwareFacts,
    ModelAssignment,
    ModelHealth,
    SelfTestSpec,
    SignedDesiredState,
)
from edge_agent.protocol.vocabulary import Channel

AT = datetime(2025, 1, 2, tzinfo=UTC)
SIGNED = SignedDesiredState(document="{}", signature="c2ln", key_id="k")


@dataclass(frozen=True)
class FakeRunner:
    """A fake loaded model: only its provider is read by the pieces under test."""

    provider: str = "CPUExecutionProvider"
    inputs: Sequence[TensorSpec] = ()
    outputs: Sequence[TensorSpec] = ()

    def run(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {}


def sha(version: int) -> str:
    return f"{version:02d}" * 32


def assignment(name: str, version: int) -> ModelAssignment:
    ref = ArtifactRef(url=f"file:///art/{name}-v{version}.onnx", sha256=sha(version), size=10)
    test = ArtifactRef(url=f"file:///art/{name}-v{version}.npz", sha256="ff" * 32, size=10)
    return ModelAssignment(
        name=name,
        version=version,
        build_id=f"b{version}",
        target="cpu-x86_64",
        artifact_kind="onnx",
        artifact=ref,
        selftest=SelfTestSpec(artifact=test),
    )


def record(name: str, version: int, provider: str | None = "CPUExecutionProvider") -> SlotRecord:
    return SlotRecord(
        name=name,
        version=version,
        build_id=f"b{version}",
        slot=f"v{version}-{sha(version)[:12]}",
        model_sha256=sha(version),
        provider=provider,
    )


def loaded(name: str, version: int, provider: str = "CPUExecutionProvider") -> LoadedModel:
    return LoadedModel(name, version, f"b{version}", FakeRunner(provider))


def journal(
    active: dict[str, int] | None = None,
    previous: dict[str, int] | None = None,
    applied: int = 0,
    pending: PendingApply | None = None,
    desired: SignedDesiredState | None = None,
) -> JournalState:
    return JournalState(
        applied_generation=applied,
        active={n: record(n, v) for n, v in (active or {}).items()},
        previous={n: record(n, v) for n, v in (previous or {}).items()},
        pending=pending,
        desired=desired,
    )


def pending(generation: int, attempts: int = 1) -> PendingApply:
    return PendingApply(generation=generation, step=ApplyStep.LOAD, model="a", attempts=attempts)


# -- recovery: resume or forget ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        pytest.param(journal(applied=3), Interrupted(), id="nothing-pending"),
        pytest.param(
            journal(applied=3, pending=pending(4), desired=SIGNED), Interrupted(document=SIGNED), id="resume-newer"
        ),
        pytest.param(journal(applied=4, pending=pending(4), desired=SIGNED), Interrupted(clear=True), id="stale-same"),
        pytest.param(journal(applied=5, pending=pending(4), desired=SIGNED), Interrupted(clear=True), id="stale-older"),
        pytest.param(journal(applied=3, pending=pending(4)), Interrupted(clear=True), id="no-document-kept"),
    ],
)
def test_an_interrupted_apply_is_resumed_only_above_the_applied_generation(
    state: JournalState, expected: Interrupted
) -> None:
    assert interrupted(state) == expected


@pytest.mark.parametrize(
    ("state", "generation", "expected"),
    [
        pytest.param(journal(), 4, 1, id="first-try"),
        pytest.param(journal(pending=pending(4, attempts=2)), 4, 3, id="same-generation-interrupted"),
        pytest.param(journal(pending=pending(3, attempts=2)), 4, 1, id="another-generation-was-pending"),
    ],
)
def test_attempts_count_the_interrupted_tries_of_one_generation(
    state: JournalState, generation: int, expected: int
) -> None:
    assert attempts(state, generation) == expected


# -- commit: slots, switch, activation ---------------------------------------------------------------------


def decision(keep: tuple[str, ...] = (), remove: tuple[str, ...] = ()) -> Decision:
    return Decision(DecisionKind.APPLY, keep=keep, remove=remove)


def versions(slots: Slots) -> tuple[dict[str, int], dict[str, int]]:
    return {n: r.version for n, r in slots.active.items()}, {n: r.version for n, r in slots.previous.items()}


@pytest.mark.parametrize(
    ("old", "plan", "installed", "expected"),
    [
        pytest.param(journal(), decision(), [record("a", 1)], ({"a": 1}, {}), id="first-install"),
        pytest.param(
            journal({"a": 1}), decision(), [record("a", 2)], ({"a": 2}, {"a": 1}), id="replaced-becomes-previous"
        ),
        pytest.param(
            journal({"a": 2}, {"a": 1}), decision(), [record("a", 1)], ({"a": 1}, {"a": 2}), id="rollback-swaps"
        ),
        pytest.param(
            journal({"a": 1, "b": 1}, {"b": 0}),
            decision(keep=("b",)),
            [record("a", 2)],
            ({"b": 1, "a": 2}, {"b": 0, "a": 1}),
            id="kept-model-keeps-its-previous",
        ),
        pytest.param(
            journal({"a": 1, "b": 1}, {"b": 0}),
            decision(keep=("a",), remove=("b",)),
            [],
            ({"a": 1}, {}),
            id="removed-model-leaves-no-slot",
        ),
    ],
)
def test_a_commit_keeps_the_replaced_slot_as_the_previous_one(
    old: JournalState, plan: Decision, installed: list[SlotRecord], expected: tuple[dict[str, int], dict[str, int]]
) -> None:
    assert versions(next_slots(old, plan, installed)) == expected


def desired(*names: str) -> DesiredState:
    return DesiredState(device_id="dev-1", generation=2, issued_at=AT, models=[assignment(n, 2) for n in names])


def table_versions(snapshot: TableSnapshot) -> dict[str, tuple[int, int | None]]:
    return {
        name: (served.active.version, served.previous.version if served.previous else None)
        for name, served in snapshot.models.items()
    }


@pytest.mark.parametrize(
    ("current", "wanted", "new", "expected"),
    [
        pytest.param({}, desired("a"), {"a": loaded("a", 2)}, {"a": (2, None)}, id="first-model"),
        pytest.param(
            {"a": ServedModel(loaded("a", 1), loaded("a", 0))},
            desired("a"),
            {"a": loaded("a", 2)},
            {"a": (2, 1)},
            id="new-active-old-previous",
        ),
        pytest.param(
            {"a": ServedModel(loaded("a", 1)), "b": ServedModel(loaded("b", 1))},
            desired("a"),
            {},
            {"a": (1, None)},
            id="kept-served-dropped-gone",
        ),
    ],
)
def test_the_switch_serves_the_new_runner_with_the_replaced_one_as_previous(
    current: dict[str, ServedModel],
    wanted: DesiredState,
    new: dict[str, LoadedModel],
    expected: dict[str, tuple[int, int | None]],
) -> None:
    snapshot = switched(TableSnapshot(current), wanted, new, frozenset(m.name for m in wanted.models))
    assert table_versions(snapshot) == expected and snapshot.ready


def prepared(version: int, restored: bool) -> Prepared:
    return Prepared(
        assignment("a", version), record("a", version), loaded("a", version, "CUDAExecutionProvider"), restored
    )


@pytest.mark.parametrize(
    ("ready", "before", "expected"),
    [
        pytest.param(prepared(2, False), None, (EventStep.ACTIVATED, "provider CUDAExecutionProvider"), id="first"),
        pytest.param(
            prepared(2, False), record("a", 0), (EventStep.ACTIVATED, "provider CUDAExecutionProvider"), id="forward"
        ),
        pytest.param(
            prepared(1, True),
            record("a", 1),
            (
                EventStep.ACTIVATED,
                f"v1 again, from its previous slot {record('a', 1).slot}, no download; provider CUDAExecutionProvider",
            ),
            id="previous-version-from-slot",
        ),
        pytest.param(
            prepared(1, False),
            record("a", 1),
            (EventStep.ACTIVATED, "v1 again, from a new download; provider CUDAExecutionProvider"),
            id="previous-version-downloaded-again",
        ),
    ],
)
def test_an_activation_is_never_called_a_rollback_by_the_device(
    ready: Prepared, before: SlotRecord | None, expected: tuple[EventStep, str]
) -> None:
    assert activation(ready, before) == expected


def test_garbage_collection_spares_the_active_and_the_previous_slots() -> None:
    state = journal({"a": 2, "b": 1}, {"a": 1})
    assert sorted(slots_in_use(state)) == sorted(
        [("a", record("a", 2).slot), ("b", record("b", 1).slot), ("a", record("a", 1).slot)]
    )


# -- reporting ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("served", "from_journal", "health", "provider"),
    [
        pytest.param(ServedModel(loaded("a", 2, "CUDAExecutionProvider")), False, ModelHealth.SERVING,
                     "CUDAExecutionProvider", id="loaded"),
        pytest.param(None, False, ModelHealth.FAILED, "CPUExecutionProvider", id="not-loaded"),
        pytest.param(None, True, ModelHealth.SERVING, "CPUExecutionProvider", id="one-shot-apply"),
        pytest.param(ServedModel(loaded("a", 1)), True, ModelHealth.FAILED, "CPUExecutionProvider",
                     id="other-version-loaded"),
    ],
)  # fmt: skip
def test_a_model_is_serving_when_its_journaled_version_is_loaded(
    served: ServedModel | None, from_journal: bool, health: ModelHealth, provider: str
) -> None:
    state = journal({"a": 2}, {"a": 1})
    status = model_status(state.active["a"], served, state, from_journal)
    assert (status.health, status.provider, status.previous_version) == (health, provider, 1)


def test_a_model_never_loaded_reports_no_provider() -> None:
    state = JournalState(active={"a": record("a", 2, provider=None)})
    assert model_status(state.active["a"], None, state, from_journal=False).provider == "none"


def test_the_reported_state_names_the_channel_and_identity() -> None:
    identity = AgentIdentity(
        "dev-1", HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64"), "9.9", {"site": "a"}, None, Channel.ANSIBLE
    )
    reported = reported_state(identity, journal({"a": 2}, applied=7), TableSnapshot())
    dumped = reported.model_dump(mode="json")
    assert (dumped["channel"], dumped["device_id"], dumped["applied_generation"]) == ("ansible", "dev-1", 7)
    assert [m.health for m in reported.models] == [ModelHealth.FAILED]


# -- prepare: the runner a restore reuses ------------------------------------------------------------------


def choice_of(version: int, sha256: str | None = None) -> Choice:
    model = assignment("a", version)
    choice = primary_choice(model)
    if sha256 is None:
        return choice
    return Choice(
        choice.build_id, choice.kind, choice.artifact.model_copy(update={"sha256": sha256}), choice.runtime, 0, 0
    )


RUNNER_1 = loaded("a", 1)


@pytest.mark.parametrize(
    ("state", "served", "choice", "kept"),
    [
        pytest.param(journal({"a": 2}, {"a": 1}), ServedModel(loaded("a", 2), RUNNER_1), choice_of(1), True,
                     id="previous-still-loaded"),
        pytest.param(journal({"a": 2}, {"a": 1}), ServedModel(loaded("a", 2)), choice_of(1), False,
                     id="previous-not-in-memory"),
        pytest.param(journal({"a": 2}), ServedModel(loaded("a", 2), RUNNER_1), choice_of(1), False,
                     id="not-journaled"),
        pytest.param(journal({"a": 2}, {"a": 1}), ServedModel(loaded("a", 2), RUNNER_1), choice_of(1, "ee" * 32),
                     False, id="other-digest"),
    ],
)  # fmt: skip
def test_a_restore_reuses_only_the_runner_of_exactly_that_artifact(
    state: JournalState, served: ServedModel, choice: Choice, kept: bool
) -> None:
    runner = kept_runner(state, TableSnapshot({"a": served}), assignment("a", 1), choice)
    assert (runner is RUNNER_1.runner) if kept else runner is None


# -- the ledger and the event emitter ----------------------------------------------------------------------


@dataclass
class MemoryJournal:
    """An in-memory JournalPort; `fail` makes the next save raise as a full disk would."""

    saved: list[JournalState] = field(default_factory=list)
    fail: bool = False

    def load(self) -> JournalState:
        return self.saved[-1] if self.saved else JournalState()

    def save(self, state: JournalState) -> None:
        if self.fail:
            raise JournalError("disk full")
        self.saved.append(state)


def test_the_ledger_marks_a_step_keeping_the_attempt_count() -> None:
    port = MemoryJournal([journal(pending=pending(4, attempts=2))])
    ledger = Ledger(port)
    ledger.load()
    ledger.mark(4, ApplyStep.SELF_TEST, "a")
    assert ledger.state.pending == PendingApply(generation=4, step=ApplyStep.SELF_TEST, model="a", attempts=2)
    assert port.saved[-1] == ledger.state


def test_the_ledger_never_shows_a_state_that_was_not_saved() -> None:
    port = MemoryJournal()
    ledger = Ledger(port)
    port.fail = True
    with pytest.raises(JournalError):
        ledger.update(applied_generation=3)
    assert ledger.state.applied_generation == 0


def test_an_event_is_stamped_bounded_and_a_failing_sink_does_not_fail_the_apply() -> None:
    heard: list[DeviceEvent] = []
    EventEmitter(heard.append, lambda: AT).emit(3, EventStep.ERROR, assignment("a", 2), "x" * (MAX_REASON + 5))
    [event] = heard
    assert (event.generation, event.model, event.version, event.at, len(event.reason or "")) == (
        3,
        "a",
        2,
        AT,
        MAX_REASON,
    )

    def broken(event: DeviceEvent) -> None:
        raise RuntimeError("broker gone")

    EventEmitter(broken, lambda: AT).emit(3, EventStep.RECEIVED)  # logged, not raised
