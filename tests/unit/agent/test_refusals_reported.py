"""A document the agent refuses is told in its reported state at once (`last_apply` failed at step `rejected`, with
the generation the document named), so the control plane's rollout need not wait for its deadline; nothing of the
refused document is stored, and the next apply's outcome replaces the refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edge_agent.core.agent import claimed_generation
from edge_agent.protocol import ApplyPhase, EventStep, SignedDesiredState, Signer
from tests.unit.agent.builders import build_version, signed


def on_disk(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_a_document_signed_by_a_key_the_agent_does_not_pin_is_reported_refused(tmp_path, make_core, signer):
    core = make_core()
    core.recover()
    before = on_disk(tmp_path / "data")

    result = core.handle(signed(Signer.generate(), 7, [build_version(tmp_path / "art", 1)]))

    last = core.reported().last_apply
    assert not result.ok and last is not None
    assert (last.generation, last.phase, last.step) == (7, ApplyPhase.FAILED, EventStep.REJECTED)
    assert "this agent pins key" in str(last.reason)
    assert on_disk(tmp_path / "data") == before  # nothing of it stored
    assert core.state.applied_generation == 0 and not core.table.current().models

    assert core.handle(signed(signer, 8, [build_version(tmp_path / "art", 1)])).ok
    after = core.reported().last_apply
    assert after is not None and (after.generation, after.phase) == (8, ApplyPhase.SUCCEEDED)


def test_an_older_generation_is_reported_refused_with_its_reason(tmp_path, make_core, signer):
    core = make_core()
    core.recover()
    assert core.handle(signed(signer, 5, [build_version(tmp_path / "art", 1)])).ok
    core.handle(signed(signer, 4, [build_version(tmp_path / "art", 2)]))
    last = core.reported().last_apply
    assert last is not None and (last.generation, last.step) == (4, EventStep.REJECTED)
    assert "not above the applied generation 5" in str(last.reason)
    assert core.reported().applied_generation == 5


def test_a_document_for_another_device_is_not_reported_as_a_refusal_of_ours(tmp_path, make_core, signer):
    core = make_core()
    core.recover()
    core.handle(signed(signer, 3, [build_version(tmp_path / "art", 1)], device_id="dev-2"))
    assert core.reported().last_apply is None


def document(**fields: object) -> SignedDesiredState:
    return SignedDesiredState(document=json.dumps(fields), signature="c2ln", key_id="k")


@pytest.mark.parametrize(
    ("signed_doc", "expected"),
    [
        pytest.param(document(device_id="dev-1", generation=12), 12, id="ours"),
        pytest.param(document(device_id="dev-2", generation=12), 0, id="another-device"),
        pytest.param(document(device_id="dev-1", generation=True), 0, id="a-bool"),
        pytest.param(document(device_id="dev-1", generation=-3), 0, id="negative"),
        pytest.param(document(device_id="dev-1", generation=2**60), 0, id="beyond-the-contract"),
        pytest.param(document(device_id="dev-1", generation="12"), 0, id="a-string"),
        pytest.param(SignedDesiredState(document="[1, 2]", signature="c2ln", key_id="k"), 0, id="not-an-object"),
        pytest.param(SignedDesiredState(document="{nope", signature="c2ln", key_id="k"), 0, id="not-json"),
    ],
)
def test_only_a_plain_generation_of_this_device_is_taken_from_a_refused_document(
    signed_doc: SignedDesiredState, expected: int
) -> None:
    assert claimed_generation(signed_doc, "dev-1") == expected
