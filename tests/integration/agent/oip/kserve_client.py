"""KServe's own `InferenceRESTClient` against an agent, for test_open_inference_protocol.py.

Runs under the interpreter of `.venv-kserve` (made by `make kserve-client`), never in the project's environment:
kserve 0.21 needs protobuf<7, and the project's onnx needs protobuf 7. Nothing of the project is imported here.
It reads one JSON document on stdin, `{"url": "http://HOST:PORT", "x": {"shape": [...], "data": [...]}}` (an FP32
input for model `lin`), asks the agent what a KServe user would, and writes one JSON document on stdout: what the
client returned (arrays as lists), or for a refusal the HTTP status and the message the client shows. The test
compares the arrays with onnxruntime.
"""

from __future__ import annotations

import asyncio
import json
import sys
from importlib.metadata import version
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

MODEL = "lin"


def request(x: np.ndarray, binary_in: bool, binary_out: bool | None, name: str = MODEL) -> InferRequest:
    tensor = InferInput("X", list(x.shape), "FP32")
    tensor.set_data_from_numpy(x, binary_data=binary_in)
    outputs = None if binary_out is None else [RequestedOutput("Y", parameters={"binary_data": binary_out})]
    return InferRequest(name, [tensor], request_id=f"kserve-{name}", request_outputs=outputs)


def outputs(response: Any, headers: dict[str, str]) -> dict[str, Any]:
    """An InferResponse (or, for a URL given whole, the JSON dict) as plain JSON. `binary`: the answer came with
    binary tensors after its JSON (the client drops `binary_data_size` from an output once it has read its bytes)."""
    binary = any(k.lower() == "inference-header-content-length" for k in headers)
    if isinstance(response, dict):
        return {
            "id": response.get("id"),
            "model_version": response.get("model_version"),
            "outputs": {
                o["name"]: {"shape": o["shape"], "data": o["data"], "binary": binary} for o in response["outputs"]
            },
        }
    return {
        "id": response.id,
        "outputs": {
            o.name: {"shape": list(o.shape), "data": o.as_numpy().ravel().tolist(), "binary": binary}
            for o in response.outputs
        },
    }


async def ask(url: str, x: np.ndarray) -> dict[str, Any]:
    client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=30))
    answers: dict[str, Any] = {"kserve_version": version("kserve")}
    try:
        answers["server_live"] = await client.is_server_live(url)
        answers["server_ready"] = await client.is_server_ready(url)
        answers["model_ready"] = {name: await client.is_model_ready(url, name) for name in (MODEL, "resnet")}
        cases: dict[str, tuple[InferRequest, str | None]] = {
            "json-in-json-out": (request(x, False, None), None),
            "binary-in-binary-out": (request(x, True, True), None),
            "binary-in-json-out": (request(x, True, False), None),
            "json-in-binary-out": (request(x, False, True), None),
            # The client builds no versioned path itself; given a whole URL it posts there as it is.
            "versioned": (request(x, False, None), f"{url}/v2/models/{MODEL}/versions/2/infer"),
            "unknown-model": (request(x, False, None, name="lim"), None),
            "wrong-shape": (request(np.zeros((3, 5), np.float32), False, None), None),
        }
        infers: dict[str, Any] = {}
        for case, (infer, whole_url) in cases.items():
            headers: dict[str, str] = {}
            try:
                if whole_url is None:
                    answer = await client.infer(url, infer, model_name=infer.model_name, response_headers=headers)
                else:
                    answer = await client.infer(whole_url, infer, is_graph_endpoint=True, response_headers=headers)
            except httpx.HTTPStatusError as exc:
                infers[case] = {"status": exc.response.status_code, "error": str(exc)}
            else:
                infers[case] = outputs(answer, headers)
        answers["infer"] = infers
    finally:
        await client.close()
    return answers


def main() -> None:
    document = json.load(sys.stdin)
    x = np.asarray(document["x"]["data"], dtype=np.float32).reshape(document["x"]["shape"])
    json.dump(asyncio.run(ask(document["url"], x)), sys.stdout)


if __name__ == "__main__":
    main()
