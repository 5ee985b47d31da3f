"""The demo's pure parts: workdir safety, the settings files it writes, KServe v2 encoding and answer checking."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

from control_plane.cli.client import CliError
from control_plane.cli.demo import fleet
from control_plane.cli.demo.command import DEFAULT_CODE_DIR, DEFAULT_SPEC
from control_plane.cli.demo.inference import compare, decode_outputs, infer_request, load_samples
from control_plane.cli.parsing import load_training_spec
from control_plane.settings import ServerSettings
from edge_agent.config import AgentConfig
from edge_agent.protocol.signing import Signer


def test_workdir_is_wiped_only_when_the_demo_made_it(tmp_path: Path) -> None:
    workdir = fleet.prepare_workdir(tmp_path / "demo")
    (workdir / "old.log").write_text("previous run")
    assert list(fleet.prepare_workdir(workdir).iterdir()) == [workdir / fleet.MARKER]

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(CliError, match="was not made by `edgectl demo`"):
        fleet.prepare_workdir(foreign)
    assert (foreign / "precious.txt").read_text() == "keep me"


def test_generated_settings_are_valid_for_both_programs(tmp_path: Path) -> None:
    ports = fleet.allocate_ports(fleet.DEMO_DEVICES)
    server = ServerSettings.model_validate(fleet.control_plane_config(tmp_path, ports, DEFAULT_CODE_DIR))
    assert (server.port, server.mqtt.port, server.host) == (ports.api, ports.broker, "127.0.0.1")
    assert server.training.code_dirs == [DEFAULT_CODE_DIR]  # the demo spec's entrypoint is relative to it
    assert (DEFAULT_CODE_DIR / load_training_spec(DEFAULT_SPEC)["entrypoint"]).is_file()
    key = Signer.generate().public_key_b64
    for device in fleet.DEMO_DEVICES:
        # `edge-agent enroll` adds the pinned key and the credentials to what the demo writes.
        agent = AgentConfig(**(fleet.agent_config(tmp_path, device, ports) | {"control_plane_public_key": key}))
        assert agent.device_id == device.device_id
        assert agent.control_plane_token is None
        assert agent.labels == device.labels
        assert agent.serving.port == ports.serving[device.device_id]
        assert agent.mqtt.username is None
    assert {d.labels["site"] for d in fleet.DEMO_DEVICES} == {"factory-a", "store-b"}
    tokens = fleet.enrollment_tokens(fleet.DEMO_DEVICES)
    assert [(body["labels"], body["max_uses"], body["auto_approve"]) for body, _ in tokens] == [
        ({"site": "factory-a"}, 2, True),
        ({"site": "store-b"}, 1, True),
    ]
    assert len({ports.broker, ports.api, *ports.serving.values()}) == 2 + len(fleet.DEMO_DEVICES)


def test_samples_round_trip_through_kserve_v2_json() -> None:
    x = np.arange(16, dtype=np.float32).reshape(2, 8)
    logits = np.array([[0.1, 0.2, 0.7], [1.0, -1.0, 0.5]], dtype=np.float32)
    buf = io.BytesIO()
    np.savez(buf, **{"input:input": x, "output:logits": logits})
    samples = load_samples(buf.getvalue())
    request = infer_request(samples.inputs)
    assert request["inputs"][0] == {"name": "input", "shape": [2, 8], "datatype": "FP32", "data": x.ravel().tolist()}
    answer = {"outputs": [{"name": "logits", "shape": [2, 3], "datatype": "FP32", "data": logits.ravel().tolist()}]}
    assert compare(samples.outputs, decode_outputs(answer)) is None


@pytest.mark.parametrize(
    ("got", "problem"),
    [
        pytest.param({"other": np.zeros((1, 3))}, "missing", id="missing"),
        pytest.param({"logits": np.zeros((2, 3))}, "shape", id="shape"),
        pytest.param({"logits": np.array([[0.1, 0.2, 0.71]])}, "differs", id="values"),
    ],
)
def test_wrong_answers_are_named(got: dict[str, np.ndarray], problem: str) -> None:
    reference = {"logits": np.array([[0.1, 0.2, 0.7]], dtype=np.float32)}
    assert problem in (compare(reference, got) or "")


def test_tiny_numeric_noise_is_accepted() -> None:
    reference = {"logits": np.array([[0.1, 0.2, 0.7]], dtype=np.float32)}
    assert compare(reference, {"logits": reference["logits"] + 5e-5}) is None
