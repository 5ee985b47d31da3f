"""After a restart the agent serves its active versions at once and loads its previous ones again (the instant
rollback, addressable by version as before the restart): each once, never reported as an apply error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient

from edge_agent.adapters.onnx_runner import OnnxRunnerFactory
from edge_agent.core.agent import AgentCore
from edge_agent.core.layout import MODEL_FILE
from edge_agent.core.ports import ModelRunner
from edge_agent.core.serving_table import ServedModel, ServingTable, TableSnapshot
from edge_agent.core.telemetry import RequestWindow
from edge_agent.protocol import EventStep, RuntimeOptions, Signer
from edge_agent.serving.app import create_app
from tests.unit.agent.builders import SAMPLE, build_version, expected_output, signed
from tests.unit.agent.conftest import CoreFactory


class LoadLog(OnnxRunnerFactory):
    """Real onnxruntime runners; every load is recorded."""

    def __init__(self) -> None:
        super().__init__(gpu_present=False)
        self.loads: list[str] = []

    def load(self, path: Path, runtime: RuntimeOptions, kind: str = "onnx") -> ModelRunner:
        self.loads.append(path.parent.name.split("-")[0])  # the slot's version: v1-..., v2-...
        return super().load(path, runtime, kind)


def restarted(tmp_path: Path, make_core: CoreFactory, signer: Signer) -> tuple[LoadLog, AgentCore]:
    """A core that applied v1 then v2, and a fresh one on the same data directory (the restart)."""
    first = make_core()
    first.recover()
    v1, v2 = build_version(tmp_path / "art", 1), build_version(tmp_path / "art", 2)
    assert first.handle(signed(signer, 1, [v1])).ok and first.handle(signed(signer, 2, [v2])).ok
    runners = LoadLog()
    core = make_core(runners=runners)
    core.recover()
    return runners, core


def test_the_active_version_first_then_the_previous_one_once(tmp_path, make_core, signer, events):
    runners, core = restarted(tmp_path, make_core, signer)
    snapshot = core.table.current()
    assert (snapshot.models["lin"].active.version, snapshot.models["lin"].previous) == (2, None)
    assert snapshot.ready and snapshot.restoring == {"lin": 1} and runners.loads == ["v2"]

    core.refresh_from_disk()  # the daemon's apply worker does this at once, then every few seconds
    core.refresh_from_disk()

    served = core.table.current().models["lin"]
    assert served.previous is not None and served.previous.version == 1 and core.table.current().restoring == {}
    np.testing.assert_allclose(served.previous.runner.run({"X": SAMPLE})["Y"], expected_output(1), rtol=1e-5)
    assert runners.loads == ["v2", "v1"]
    events.clear()
    assert core.handle(signed(signer, 3, [build_version(tmp_path / "art", 1)])).ok  # the rollback: no reload
    assert runners.loads == ["v2", "v1"] and "kept in memory, not reloaded" in str(events[2].reason)


def test_a_previous_slot_that_cannot_load_is_tried_once_and_is_no_apply_error(tmp_path, make_core, signer, events):
    runners, core = restarted(tmp_path, make_core, signer)
    slot = tmp_path / "data" / "slots" / "lin" / core.state.previous["lin"].slot
    (slot / MODEL_FILE).write_bytes(b"not a model")
    events.clear()

    core.refresh_from_disk()
    core.refresh_from_disk()

    snapshot = core.table.current()
    assert snapshot.ready and snapshot.models["lin"].previous is None and snapshot.restoring == {}
    assert runners.loads == ["v2", "v1"]  # tried once
    assert [e for e in events if e.step is EventStep.ERROR] == []
    assert core.reported().models[0].previous_version == 1  # still on disk: a rollback loads or fetches it again


def test_a_version_being_restored_answers_503_with_retry_after_not_404(tmp_path, make_core, signer):
    _, core = restarted(tmp_path, make_core, signer)
    table = ServingTable()
    active = core.table.current().models["lin"].active
    table.swap(TableSnapshot({"lin": ServedModel(active)}, frozenset({"lin"}), {"lin": 1}))
    client = TestClient(create_app(table, RequestWindow(60)))

    for path in ("/v2/models/lin/versions/1/ready", "/v2/models/lin/versions/1"):
        answer = client.get(path)
        assert answer.status_code == 503 and answer.headers["retry-after"] == "1"
        assert "version 1 (its previous version, kept for a rollback) is being loaded again" in answer.json()["error"]
    assert client.get("/v2/models/lin/versions/2/ready").status_code == 200
    assert client.get("/v2/models/lin/versions/3/ready").status_code == 404
