"""What the agent's serving path costs on top of the library calls it wraps.

Measures, on one machine in one run (p50 over N calls, after a warm-up):

Part 1, a small MLP (the demo model's size), where the protocol's own cost shows most:
  1. bare onnxruntime `InferenceSession.run`                       (the library call)
  2. the agent's runner (`OnnxRunner.run`)                           (our wrapper, in-process)
  3. a bare FastAPI route calling `session.run` over loopback HTTP   (the HTTP baseline, JSON)
  4. the agent's `/v2/models/{name}/infer` over loopback, JSON       (what clients get)

Part 2, a ResNet-18-sized CNN (11.7M parameters, 1x3x224x224 input) at batch 1 and 8:
  1. bare onnxruntime `session.run`                                  (the floor of the work)
  2. the same bytes (binary tensor data extension: JSON header, then raw tensors) through a minimal HTTP route
     that only parses them, runs the session and answers raw bytes   (the bare HTTP floor)
  3. the agent's infer route with binary tensors in and out          (goal: p50 <= 1.2x the bare HTTP floor)
  4. the agent's infer route with JSON in and out                    (how far JSON is from that floor)
Request bodies are encoded once, before timing: the figures are the server's cost plus loopback, not the client's.

Run: .venv/bin/python benchmarks/serving_overhead.py [--calls 2000] [--http-calls 500] [--cnn-calls 50]
About 2 minutes on 2 cores by default. Not a timed test: figures vary with the machine; quote p50s and ratios.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request, Response
from onnx import TensorProto, helper, numpy_helper
from starlette.concurrency import run_in_threadpool

from edge_agent.adapters.onnx_runner import OnnxRunner, OnnxRunnerFactory
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable, TableSnapshot
from edge_agent.core.telemetry import RequestWindow
from edge_agent.protocol import RuntimeOptions
from edge_agent.serving.app import create_app

FEATURES, HIDDEN, CLASSES = 8, 64, 3
HEADER = "Inference-Header-Content-Length"


def mlp_model(path: Path) -> None:
    """An MLP of the demo model's size: 8 -> 64 -> 64 -> 3, dynamic batch."""
    rng = np.random.default_rng(0)
    dims = [FEATURES, HIDDEN, HIDDEN, CLASSES]
    inits, nodes, current = [], [], "input"
    for i in range(3):
        w = numpy_helper.from_array(rng.standard_normal((dims[i], dims[i + 1])).astype(np.float32), f"w{i}")
        b = numpy_helper.from_array(rng.standard_normal(dims[i + 1]).astype(np.float32), f"b{i}")
        inits += [w, b]
        out = "logits" if i == 2 else f"h{i}"
        nodes.append(helper.make_node("Gemm", [current, f"w{i}", f"b{i}"], [f"g{i}" if i < 2 else out]))
        if i < 2:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [out]))
        current = out
    _save(nodes, inits, "mlp", ["batch", FEATURES], ["batch", CLASSES], path)


class _Graph:
    """Builds a ResNet-18 graph (batch norm folded into the convolutions, as an exported inference model is)."""

    def __init__(self) -> None:
        self.rng = np.random.default_rng(0)
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []

    def conv(self, x: str, cin: int, cout: int, k: int, stride: int, relu: bool = True) -> str:
        name = f"c{len(self.nodes)}"
        w = (self.rng.standard_normal((cout, cin, k, k)) * np.sqrt(2.0 / (cin * k * k))).astype(np.float32)
        bias = np.zeros(cout, np.float32)
        self.inits += [numpy_helper.from_array(w, f"{name}w"), numpy_helper.from_array(bias, f"{name}b")]
        geometry = {"kernel_shape": [k, k], "strides": [stride] * 2, "pads": [k // 2] * 4}
        self.nodes.append(helper.make_node("Conv", [x, f"{name}w", f"{name}b"], [name], **geometry))
        return self.op("Relu", name) if relu else name

    def op(self, kind: str, *inputs: str, **attrs: Any) -> str:
        name = f"{kind.lower()}{len(self.nodes)}"
        self.nodes.append(helper.make_node(kind, list(inputs), [name], **attrs))
        return name

    def block(self, x: str, cin: int, cout: int, stride: int) -> str:
        y = self.conv(self.conv(x, cin, cout, 3, stride), cout, cout, 3, 1, relu=False)
        shortcut = x if stride == 1 and cin == cout else self.conv(x, cin, cout, 1, stride, relu=False)
        return self.op("Relu", self.op("Add", y, shortcut))


def resnet18_model(path: Path) -> int:
    """A ResNet-18-sized CNN (random weights), input `input` [batch, 3, 224, 224] -> `logits` [batch, 1000].
    Returns its parameter count."""
    g = _Graph()
    x = g.op("MaxPool", g.conv("input", 3, 64, 7, 2), kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])
    channels = 64
    for width, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        x = g.block(g.block(x, channels, width, stride), width, width, 1)
        channels = width
    pooled = g.op("Flatten", g.op("GlobalAveragePool", x))
    fc_w = (g.rng.standard_normal((512, 1000)) * 0.01).astype(np.float32)
    g.inits += [numpy_helper.from_array(fc_w, "fcw"), numpy_helper.from_array(np.zeros(1000, np.float32), "fcb")]
    g.nodes.append(helper.make_node("Gemm", [pooled, "fcw", "fcb"], ["logits"]))
    _save(g.nodes, g.inits, "resnet18", ["batch", 3, 224, 224], ["batch", 1000], path)
    return sum(int(np.prod(t.dims)) for t in g.inits)


def _save(nodes: list[Any], inits: list[Any], name: str, shape_in: list[Any], shape_out: list[Any], path: Path) -> None:
    graph = helper.make_graph(
        nodes,
        name,
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, shape_in)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, shape_out)],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def p50s_us(fns: Mapping[str, Callable[[], Any]], calls: int, warmup: int = 5) -> dict[str, float]:
    """p50 of each function, called in turn within every round: a machine whose load drifts during the run
    slows every figure alike, so the ratios stay fair."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(calls):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) * 1e6 for name, values in times.items()}


def serve(app: FastAPI) -> tuple[uvicorn.Server, str]:
    sock_port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=sock_port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("server did not start")
        time.sleep(0.01)
    return server, f"http://127.0.0.1:{sock_port}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bare_json_app(session: ort.InferenceSession) -> FastAPI:
    app = FastAPI()

    @app.post("/infer")
    def infer(body: dict[str, Any]) -> dict[str, Any]:
        item = body["inputs"][0]
        x = np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])
        (y,) = session.run(None, {"input": x})
        return {"outputs": [{"name": "logits", "shape": list(y.shape), "datatype": "FP32", "data": y.ravel().tolist()}]}

    return app


def bare_binary_app(session: ort.InferenceSession) -> FastAPI:
    """The least an HTTP route can do with a binary-extension request: split, run, answer raw bytes."""
    app = FastAPI()

    @app.post("/infer")
    async def infer(request: Request) -> Response:
        body = await request.body()
        length = int(request.headers[HEADER])
        item = json.loads(body[:length])["inputs"][0]
        x = np.frombuffer(body, np.float32, offset=length).reshape(item["shape"])
        (y,) = await run_in_threadpool(session.run, None, {"input": x})
        out = {"outputs": [{"name": "logits", "shape": list(y.shape), "datatype": "FP32"}]}
        head = json.dumps(out).encode()
        return Response(head + y.tobytes(), headers={HEADER: str(len(head))})

    return app


def agent_app(session: ort.InferenceSession, name: str) -> FastAPI:
    """The agent's app over the same session as the floors: one ORT thread pool, so only serving differs."""
    runner = OnnxRunner(session)
    table = ServingTable()
    table.swap(TableSnapshot({name: ServedModel(LoadedModel(name, 1, "b1", runner))}, frozenset({name})))
    return create_app(table, RequestWindow(60.0))


def json_body(x: np.ndarray) -> bytes:
    return json.dumps(
        {"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}
    ).encode()


def binary_body(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": x.nbytes}}
    head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return head + x.astype("<f4").tobytes(), {HEADER: str(len(head))}


JSON_HEADERS = {"content-type": "application/json"}


def post(client: httpx.Client, url: str, body: bytes, headers: dict[str, str] = JSON_HEADERS) -> Callable[[], Any]:
    return lambda: client.post(url, content=body, headers=headers).raise_for_status()


def mlp_rows(tmp: Path, calls: int, http_calls: int) -> list[tuple[float, ...]]:
    path = tmp / "mlp.onnx"
    mlp_model(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runner = OnnxRunnerFactory(gpu_present=False).load(path, RuntimeOptions())
    agent_server, agent_url = serve(agent_app(session, "mlp"))
    base_server, base_url = serve(bare_json_app(session))
    rows = []
    try:
        with httpx.Client() as client:
            for batch in (1, 32):
                x = np.random.default_rng(1).standard_normal((batch, FEATURES)).astype(np.float32)
                body = json_body(x)
                library = p50s_us(
                    {
                        "bare": lambda x=x: session.run(None, {"input": x}),
                        "runner": lambda x=x: runner.run({"input": x}),
                    },
                    calls,
                    50,
                )
                http = p50s_us(
                    {
                        "bare": post(client, f"{base_url}/infer", body),
                        "agent": post(client, f"{agent_url}/v2/models/mlp/infer", body),
                    },
                    http_calls,
                    50,
                )
                rows.append((batch, library["bare"], library["runner"], http["bare"], http["agent"]))
    finally:
        agent_server.should_exit = base_server.should_exit = True
    return rows


def cnn_rows(tmp: Path, calls: int) -> tuple[int, list[tuple[float, ...]]]:
    path = tmp / "resnet18.onnx"
    params = resnet18_model(path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    agent_server, agent_url = serve(agent_app(session, "resnet"))
    floor_server, floor_url = serve(bare_binary_app(session))
    infer = f"{agent_url}/v2/models/resnet/infer"
    rows = []
    try:
        with httpx.Client(timeout=120) as client:
            for batch in (1, 8):
                x = np.random.default_rng(1).standard_normal((batch, 3, 224, 224)).astype(np.float32)
                binary, headers = binary_body(x)
                figures = p50s_us(
                    {
                        "bare": lambda x=x: session.run(None, {"input": x}),
                        "floor": post(client, f"{floor_url}/infer", binary, headers),
                        "binary": post(client, infer, binary, headers),
                        "json": post(client, infer, json_body(x)),
                    },
                    calls,
                    2,
                )
                rows.append((batch, figures["bare"], figures["floor"], figures["binary"], figures["json"]))
    finally:
        agent_server.should_exit = floor_server.should_exit = True
    return params, rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000, help="MLP: library calls per figure")
    parser.add_argument("--http-calls", type=int, default=500, help="MLP: HTTP calls per figure")
    parser.add_argument("--cnn-calls", type=int, default=50, help="ResNet-18-sized model: calls per figure")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        mlp = mlp_rows(Path(tmp), args.calls, args.http_calls)
        params, cnn = cnn_rows(Path(tmp), args.cnn_calls)

    print(f"onnxruntime {ort.__version__}, CPU provider; p50 in microseconds")
    print(f"\nMLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES}, JSON")
    print(f"{'batch':>5} {'bare ORT':>9} {'runner':>9} {'ratio':>6} {'bare HTTP':>10} {'agent':>10} {'ratio':>6}")
    for batch, bare, ours, http_bare, http_ours in mlp:
        print(
            f"{batch:>5} {bare:>9.1f} {ours:>9.1f} {ours / bare:>6.2f} {http_bare:>10.1f} {http_ours:>10.1f} "
            f"{http_ours / http_bare:>6.2f}"
        )
    print(f"\nResNet-18-sized CNN ({params / 1e6:.1f}M parameters), input [batch, 3, 224, 224] FP32")
    print(f"{'batch':>5} {'bare ORT':>10} {'HTTP floor':>11} {'binary':>10} {'ratio':>6} {'JSON':>11} {'ratio':>6}")
    for batch, bare, floor, binary, as_json in cnn:
        print(
            f"{batch:>5} {bare:>10.0f} {floor:>11.0f} {binary:>10.0f} {binary / floor:>6.2f} {as_json:>11.0f} "
            f"{as_json / floor:>6.2f}"
        )
    print("ratio: the agent's path over the bare HTTP floor beside it (goal for binary tensors: <= 1.20)")


if __name__ == "__main__":
    main()
