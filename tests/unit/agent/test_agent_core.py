"""The apply path through the core with real onnxruntime and file:// artifacts: what is served, journaled, said."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_agent.core.agent import AgentCore
from edge_agent.core.reconcile import DecisionKind
from edge_agent.protocol import ApplyPhase, EventStep, ModelHealth, Signer
from tests.unit.agent.builders import SAMPLE, artifact, build_version, expected_output, signed
from tests.unit.agent.conftest import CoreFactory


def served_output(core: AgentCore, name: str = "lin") -> tuple[int, np.ndarray]:
    served = core.table.current().models[name]
    return served.active.version, served.active.runner.run({"X": SAMPLE})["Y"]


def steps(events: list) -> list[EventStep]:
    return [e.step for e in events]


def test_applies_a_signed_desired_state_and_serves_it(tmp_path: Path, make_core: CoreFactory, signer: Signer, events):
    core = make_core()
    core.recover()
    result = core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)]))

    assert result.ok and result.outcome is DecisionKind.APPLY
    version, output = served_output(core)
    assert version == 1
    np.testing.assert_allclose(output, expected_output(1), rtol=1e-5)
    assert core.table.current().ready
    assert steps(events) == [
        EventStep.RECEIVED,
        EventStep.DOWNLOADING,
        EventStep.DOWNLOADED,
        EventStep.DOWNLOADED,
        EventStep.VERIFIED,
        EventStep.LOADED,
        EventStep.SELF_TEST_PASSED,
        EventStep.ACTIVATED,
    ]
    reported = core.reported()
    assert reported.applied_generation == 1
    assert reported.last_apply is not None and reported.last_apply.phase is ApplyPhase.SUCCEEDED
    assert [(m.name, m.version, m.health, m.provider) for m in reported.models] == [
        ("lin", 1, ModelHealth.SERVING, "CPUExecutionProvider")
    ]


def test_new_version_switches_and_previous_stays_loaded_and_on_disk(tmp_path, make_core, signer):
    core = make_core()
    core.recover()
    assert core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)])).ok
    assert core.handle(signed(signer, 2, [build_version(tmp_path / "art", 2)])).ok

    served = core.table.current().models["lin"]
    assert (served.active.version, served.previous and served.previous.version) == (2, 1)
    assert core.state.previous["lin"].version == 1
    slots = sorted(p.name for p in (tmp_path / "data" / "slots" / "lin").iterdir())
    assert len(slots) == 2 and slots[0].startswith("v1-") and slots[1].startswith("v2-")
    assert core.reported().models[0].previous_version == 1


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        pytest.param(
            lambda s: s.model_copy(update={"signature": Signer.generate().sign(b"x")}), "signature", id="forged"
        ),
        pytest.param(
            lambda s: s.model_copy(update={"document": s.document.replace('"dev-1"', '"dev-1" ')}),
            "signature",
            id="tampered",
        ),
    ],
)
def test_a_document_that_does_not_verify_is_rejected(tmp_path, make_core, signer, events, mutate, reason):
    core = make_core()
    core.recover()
    result = core.handle(mutate(signed(signer, 1, [build_version(tmp_path / "art", 1)])))
    assert not result.ok and result.outcome is DecisionKind.REJECT and reason in result.reason
    assert steps(events) == [EventStep.REJECTED]
    assert core.state.applied_generation == 0 and not core.table.current().models


def test_a_document_signed_by_another_key_is_rejected(tmp_path, make_core, events):
    core = make_core()
    core.recover()
    result = core.handle(signed(Signer.generate(), 1, [build_version(tmp_path / "art", 1)]))
    assert not result.ok and "pins key" in result.reason
    assert steps(events) == [EventStep.REJECTED]


def test_a_document_for_another_device_is_rejected(tmp_path, make_core, signer, events):
    core = make_core()
    core.recover()
    result = core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)], device_id="dev-2"))
    assert not result.ok and "dev-2" in result.reason
    assert events[-1].step is EventStep.REJECTED and not core.table.current().models


def test_replays_are_refused_or_ignored(tmp_path, make_core, signer, events):
    core = make_core()
    core.recover()
    v1 = build_version(tmp_path / "art", 1)
    assert core.handle(signed(signer, 5, [v1])).ok
    events.clear()

    same = core.handle(signed(signer, 5, [build_version(tmp_path / "art", 2)]))
    older = core.handle(signed(signer, 4, [build_version(tmp_path / "art", 2)]))

    assert same.ok and same.outcome is DecisionKind.NOOP
    assert not older.ok and "not above the applied generation 5" in older.reason
    assert steps(events) == [EventStep.REJECTED]
    assert served_output(core)[0] == 1


def test_digest_mismatch_is_refused_and_the_old_model_keeps_serving(tmp_path, make_core, signer, events):
    core = make_core()
    core.recover()
    assert core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)])).ok
    v2 = build_version(tmp_path / "art", 2)
    # v2's URL, but the digest and size of another file: what a tampered or truncated download looks like.
    wrong = v2.model_copy(update={"artifact": artifact(tmp_path / "art" / "lin-v1.onnx", v2.artifact.url)})

    result = core.handle(signed(signer, 2, [wrong]))

    assert not result.ok and "sha256" in result.reason
    assert served_output(core)[0] == 1
    assert core.state.last_apply is not None and core.state.last_apply.phase is ApplyPhase.FAILED
    assert events[-1].step is EventStep.ERROR and "refused" in (events[-1].reason or "")


def test_a_model_that_fails_its_self_test_is_never_switched_in_nor_retried(tmp_path, make_core, signer, events):
    core = make_core()
    core.recover()
    assert core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)])).ok
    bad = signed(signer, 2, [build_version(tmp_path / "art", 2, bad=True)])

    result = core.handle(bad)

    assert not result.ok and "self-test failed" in result.reason
    assert served_output(core)[0] == 1
    assert events[-1].step is EventStep.SELF_TEST_FAILED
    reported = core.reported()
    assert reported.last_apply is not None
    assert (reported.last_apply.phase, reported.last_apply.step) == (ApplyPhase.FAILED, EventStep.SELF_TEST_FAILED)
    assert reported.applied_generation == 1
    events.clear()
    assert core.handle(bad).outcome is DecisionKind.NOOP and not events  # a failed generation is not retried
    assert core.handle(signed(signer, 3, [build_version(tmp_path / "art", 3)])).ok  # a newer one is
    assert served_output(core)[0] == 3


def test_a_model_that_cannot_load_is_refused(tmp_path, make_core, signer, events):
    core = make_core()
    core.recover()
    garbage = tmp_path / "art" / "garbage.onnx"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"this is not onnx" * 10)
    v1 = build_version(tmp_path / "art", 1)
    result = core.handle(signed(signer, 1, [v1.model_copy(update={"artifact": artifact(garbage)})]))
    assert not result.ok and "cannot load" in result.reason
    assert events[-1].step is EventStep.ERROR and not core.table.current().models


def test_removing_a_model_from_the_desired_state_stops_serving_it(tmp_path, make_core, signer):
    core = make_core()
    core.recover()
    assert core.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)])).ok
    assert core.handle(signed(signer, 2, [])).ok
    assert not core.table.current().models and core.state.active == {}


def test_a_restarted_core_serves_the_last_known_good_model(tmp_path, make_core, signer):
    first = make_core()
    first.recover()
    assert first.handle(signed(signer, 1, [build_version(tmp_path / "art", 1)])).ok

    second = make_core()
    assert second.recover() is None
    assert served_output(second)[0] == 1 and second.table.current().ready
    assert second.reported().models[0].health is ModelHealth.SERVING
