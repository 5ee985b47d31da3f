"""Open Inference Protocol conformance, proved with clients nobody here wrote, against a real `edge-agent run`.

The agent serves model `lin` v2, installed by `edge-agent apply`, with no broker (so v1 is not held: a 404).
- tritonclient.http (NVIDIA's, sync and asyncio), with binary tensors in and out and with JSON;
- KServe's own InferenceRESTClient (skipped where it cannot be installed beside this project: see KSERVE_SKIP);
- schemathesis over the protocol's REST OpenAPI file (kserve/open-inference-protocol, copied in oip/ with its
  origin), normalised only where schemathesis cannot read it or the spec leaves a status undocumented.
Every answer is checked against onnxruntime run here on the same inputs (np.allclose).
"""

from __future__ import annotations

import asyncio
import copy
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import schemathesis
import yaml
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from edge_agent.protocol import Signer
from tests.fuzzing import fuzz_settings
from tests.integration.agent.harness import AgentProcess
from tests.support import free_port, python_env, wait_for
from tests.unit.agent.builders import SAMPLE, build_version, signed, write_config

pytestmark = pytest.mark.integration

SPEC = Path(__file__).parent / "oip" / "open_inference_rest.yaml"
KSERVE_SKIP = (
    "kserve 0.21.0 (the newest) requires protobuf<7: installing it would replace this project's protobuf 7.36.2 "
    "with 6.33.6 (pip install --dry-run kserve), so it cannot run beside onnx/onnxruntime here"
)


@dataclass
class ServingAgent:
    url: str
    port: int
    sessions: dict[int, ort.InferenceSession]

    def expected(self, version: int, x: np.ndarray) -> np.ndarray:
        (y,) = self.sessions[version].run(None, {"X": x})
        return np.asarray(y)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingAgent]:
    tmp = tmp_path_factory.mktemp("oip-agent")
    signer, port = Signer.generate(), free_port()
    config = write_config(
        tmp / "agent.yaml",
        tmp / "data",
        signer.public_key_b64,
        device_id="dev-oip",
        mqtt={"enabled": False},
        serving={"host": "127.0.0.1", "port": port},
    )
    sessions = {}
    for generation in (2,):
        model = build_version(tmp / "art", generation)
        desired = tmp / f"desired-{generation}.json"
        desired.write_text(signed(signer, generation, [model], "dev-oip").model_dump_json())
        applied = subprocess.run(
            ["edge-agent", "apply", "--desired", str(desired), "--config", str(config)],
            env=python_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert applied.returncode == 0, applied.stderr
        model_file = tmp / "art" / f"lin-v{generation}.onnx"
        sessions[generation] = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    process = AgentProcess(config, tmp / "agent.log").start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), timeout=30, what=f"agent ready\n{process.output()}")
        yield ServingAgent(url, port, sessions)
    finally:
        process.kill()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


# ---------------------------------------------------------------- tritonclient (NVIDIA's client)

tritonhttp = pytest.importorskip("tritonclient.http")
tritonaio = pytest.importorskip("tritonclient.http.aio")
from tritonclient.utils import InferenceServerException  # noqa: E402  (after the importorskip)


def test_tritonclient_sees_a_live_ready_server_with_the_binary_extension(agent):
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{agent.port}")
    assert client.is_server_live() and client.is_server_ready()
    metadata = client.get_server_metadata()
    assert metadata["name"] == "edge-agent" and "binary_tensor_data" in metadata["extensions"]
    assert client.is_model_ready("lin") and client.is_model_ready("lin", "2")
    assert not client.is_model_ready("lin", "1") and not client.is_model_ready("resnet")
    model = client.get_model_metadata("lin", "2")
    assert (model["versions"], model["inputs"][0]["shape"]) == (["2"], [-1, 4])
    with pytest.raises(InferenceServerException, match="has no version '1'; it serves 2"):
        client.get_model_metadata("lin", "1")


@pytest.mark.parametrize(
    ("binary_in", "binary_out"),
    [
        pytest.param(True, True, id="binary-in-binary-out"),
        pytest.param(False, False, id="json-in-json-out"),
        pytest.param(True, False, id="binary-in-json-out"),
        pytest.param(False, True, id="json-in-binary-out"),
    ],
)
@pytest.mark.parametrize("version", [pytest.param("", id="unversioned"), pytest.param("2", id="versioned")])
def test_tritonclient_infer_matches_onnxruntime(agent, binary_in, binary_out, version):
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{agent.port}")
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(np.float32)
    tensor = tritonhttp.InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    wanted = [tritonhttp.InferRequestedOutput("Y", binary_data=binary_out)]
    result = client.infer("lin", [tensor], model_version=version, outputs=wanted, request_id="t1")
    answer = result.get_response()
    assert answer["model_version"] == (version or "2") and answer["id"] == "t1"
    assert ("parameters" in answer["outputs"][0]) == binary_out
    assert np.allclose(result.as_numpy("Y"), agent.expected(int(version or 2), x), rtol=1e-5, atol=1e-6)


def test_tritonclient_default_request_is_all_binary(agent):
    """tritonclient's default: binary inputs, no outputs named, `binary_data_output: true`."""
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{agent.port}")
    tensor = tritonhttp.InferInput("X", [3, 4], "FP32")
    tensor.set_data_from_numpy(SAMPLE)
    result = client.infer("lin", [tensor])
    assert np.allclose(result.as_numpy("Y"), agent.expected(2, SAMPLE), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("shape", "datatype", "message"),
    [
        pytest.param([3, 5], "FP32", "the model takes [-1, 4]", id="wrong-shape"),
        pytest.param([3, 4], "FP64", "must be FP32, got FP64", id="wrong-datatype"),
    ],
)
def test_tritonclient_sees_the_servers_reason_for_a_bad_request(agent, shape, datatype, message):
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{agent.port}")
    tensor = tritonhttp.InferInput("X", shape, datatype)
    tensor.set_data_from_numpy(np.zeros(shape, dtype=np.float32 if datatype == "FP32" else np.float64))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("lin", [tensor])
    assert message in refused.value.message() and refused.value.status() == "400"


def test_tritonclient_unknown_model_is_404_with_a_hint(agent):
    client = tritonhttp.InferenceServerClient(f"127.0.0.1:{agent.port}")
    tensor = tritonhttp.InferInput("X", [3, 4], "FP32")
    tensor.set_data_from_numpy(SAMPLE)
    with pytest.raises(InferenceServerException) as refused:
        client.infer("lim", [tensor])
    assert refused.value.status() == "404" and "did you mean lin?" in refused.value.message()


def test_tritonclient_asyncio_client_infers_concurrently(agent):
    async def run() -> list[np.ndarray]:
        client = tritonaio.InferenceServerClient(f"127.0.0.1:{agent.port}")
        try:
            assert await client.is_server_ready()
            assert "binary_tensor_data" in (await client.get_server_metadata())["extensions"]

            async def one(binary: bool) -> np.ndarray:
                tensor = tritonaio.InferInput("X", [3, 4], "FP32")
                tensor.set_data_from_numpy(SAMPLE, binary_data=binary)
                wanted = [tritonaio.InferRequestedOutput("Y", binary_data=binary)]
                return (await client.infer("lin", [tensor], outputs=wanted)).as_numpy("Y")

            return list(await asyncio.gather(*(one(i % 2 == 0) for i in range(8))))
        finally:
            await client.close()

    for y in asyncio.run(run()):
        assert np.allclose(y, agent.expected(2, SAMPLE), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- KServe's own client


def test_kserve_inference_rest_client(agent):
    pytest.importorskip("kserve", reason=KSERVE_SKIP)
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run() -> Any:
        client = InferenceRESTClient(RESTConfig(protocol="v2"))
        tensor = InferInput("X", [3, 4], "FP32")
        tensor.set_data_from_numpy(SAMPLE, binary_data=False)
        try:
            return await client.infer(agent.url, InferRequest("lin", [tensor]), model_name="lin")
        finally:
            await client.close()

    response = asyncio.run(run())
    assert np.allclose(response.outputs[0].as_numpy(), agent.expected(2, SAMPLE), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------- limits, over a real socket


def test_a_declared_body_over_the_limit_is_refused_before_it_is_sent(agent):
    """What an attacker does not get: the agent reading (or holding) a terabyte. The body is never sent; the
    answer comes anyway."""
    with socket.create_connection(("127.0.0.1", agent.port), timeout=10) as sock:
        sock.sendall(
            b"POST /v2/models/lin/infer HTTP/1.1\r\nHost: agent\r\nContent-Length: 1000000000000\r\n"
            b"Inference-Header-Content-Length: 10\r\n\r\n"
        )
        answer = _read_response(sock)
    assert answer.startswith("HTTP/1.1 413"), answer
    assert "over the limit of" in answer


def _read_response(sock: socket.socket) -> str:
    data = b""
    while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _content_length(data):
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _content_length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":", 1)[1])
    return 0


# ---------------------------------------------------------------- schemathesis over the protocol's OpenAPI file


def normalised_spec() -> dict[str, Any]:
    """The upstream document, changed only where schemathesis cannot read it or the spec leaves a gap:
    - its paths are written `${MODEL_NAME}`, which is no OpenAPI template: `{MODEL_NAME}`; `/v2/` is `/v2`;
    - the spec says the version may be left out: each versioned path also exists without `/versions/...`;
    - `tensor_data` refers to itself (nested lists), which schemathesis cannot generate: a flat list here;
    - MODEL_NAME is this agent's model, so generated bodies reach the model (a free name only finds 404s);
    - the statuses the spec's prose names but its document leaves out (404 unknown model or version, 413 body
      too large, 503 not ready) are documented with its error object;
    - an example request the model can answer (its own examples name a model with UINT32/BOOL inputs)."""
    document = yaml.safe_load(SPEC.read_text())
    error = {
        "description": "Error",
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/inference_error_response"}}},
    }
    paths: dict[str, Any] = {}
    for raw, item in document["paths"].items():
        path = raw.replace("${", "{").rstrip("/")
        for operation in (v for k, v in item.items() if k != "parameters"):
            operation["responses"].update({"404": error, "413": error, "503": error})
            operation["responses"].setdefault("400", error)
        for parameter in item.get("parameters", []):
            if parameter["name"] == "MODEL_NAME":
                parameter["schema"] = {"type": "string", "enum": ["lin"]}
        paths[path] = item
        if "/versions/{MODEL_VERSION}" in path:
            unversioned = copy.deepcopy(item)
            unversioned["parameters"] = [p for p in item["parameters"] if p["name"] != "MODEL_VERSION"]
            for operation in (v for k, v in unversioned.items() if k != "parameters"):
                operation["operationId"] += "-unversioned"
            paths[path.replace("/versions/{MODEL_VERSION}", "")] = unversioned
    document["paths"] = paths
    schemas = document["components"]["schemas"]
    schemas["tensor_data"] = {
        "type": "array",
        "items": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}]},
    }
    example = {
        "id": "42",
        "inputs": [{"name": "X", "shape": [3, 4], "datatype": "FP32", "data": SAMPLE.ravel().tolist()}],
    }
    schemas["inference_request"].pop("x-examples", None)
    schemas["inference_request"]["example"] = example
    return document


API = schemathesis.openapi.from_dict(normalised_spec())
API.config.update(request_timeout=30)


def assert_matches_onnxruntime(agent: ServingAgent, case: schemathesis.Case, response: Any) -> None:
    """A 200 from an inference is the model's answer to the inputs sent: checked against onnxruntime here."""
    if response.status_code != 200 or not case.path.endswith("/infer"):
        return
    answer = response.json()
    [item] = case.body["inputs"]
    x = np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])
    [output] = answer["outputs"]
    y = np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])
    assert np.allclose(y, agent.expected(int(answer["model_version"]), x), rtol=1e-5, atol=1e-6)


CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance, content_type_conformance]


@API.parametrize()
@fuzz_settings(ci_examples=30, deadline=None)  # each request is bounded by request_timeout instead
@pytest.mark.fuzz
def test_schemathesis_over_the_protocols_openapi(case: schemathesis.Case, agent: ServingAgent) -> None:
    response = case.call_and_validate(base_url=agent.url, checks=CHECKS)
    assert_matches_onnxruntime(agent, case, response)
