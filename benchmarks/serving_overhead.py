"""What the agent's serving path costs on top of the library calls it wraps.

Measures, on one machine in one run (medians over N calls, after a warm-up):
  1. bare onnxruntime `InferenceSession.run`                       (the library call)
  2. the agent's runner (`OnnxRunner.run`)                           (our wrapper, in-process)
  3. a bare FastAPI route calling `session.run` over loopback HTTP   (the HTTP baseline)
  4. the agent's KServe v2 `/v2/models/{name}/infer` over loopback   (what clients get)
and prints each figure with its ratio to the baseline it should be compared with.

Run: .venv/bin/python benchmarks/serving_overhead.py [--calls 2000] [--http-calls 500]
Not a timed test: figures vary with the machine; quote medians and ratios.
"""

from __future__ import annotations

import argparse
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from onnx import TensorProto, helper, numpy_helper

from edge_agent.adapters.onnx_runner import OnnxRunnerFactory
from edge_agent.core.serving_table import LoadedModel, ServedModel, ServingTable, TableSnapshot
from edge_agent.core.telemetry import RequestWindow
from edge_agent.protocol import RuntimeOptions
from edge_agent.serving.app import create_app

FEATURES, HIDDEN, CLASSES = 8, 64, 3


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
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", CLASSES])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def median_us(fn: Callable[[], Any], calls: int) -> float:
    for _ in range(min(50, calls)):
        fn()
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


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


def bare_app(session: ort.InferenceSession) -> FastAPI:
    app = FastAPI()

    @app.post("/infer")
    def infer(body: dict[str, Any]) -> dict[str, Any]:
        item = body["inputs"][0]
        x = np.asarray(item["data"], dtype=np.float32).reshape(item["shape"])
        (y,) = session.run(None, {"input": x})
        return {"outputs": [{"name": "logits", "shape": list(y.shape), "datatype": "FP32", "data": y.ravel().tolist()}]}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--http-calls", type=int, default=500)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "mlp.onnx"
        mlp_model(path)
        options = ort.SessionOptions()
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        runner = OnnxRunnerFactory(gpu_present=False).load(path, RuntimeOptions())
        table = ServingTable()
        table.swap(TableSnapshot({"mlp": ServedModel(LoadedModel("mlp", 1, "b1", runner))}, frozenset({"mlp"})))
        agent_server, agent_url = serve(create_app(table, RequestWindow(60.0)))
        base_server, base_url = serve(bare_app(session))
        rows = []
        try:
            for batch in (1, 32):
                x = np.random.default_rng(1).standard_normal((batch, FEATURES)).astype(np.float32)
                body = {
                    "inputs": [
                        {"name": "input", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
                    ]
                }
                bare = median_us(lambda x=x: session.run(None, {"input": x}), args.calls)
                ours = median_us(lambda x=x: runner.run({"input": x}), args.calls)
                with httpx.Client() as client:
                    http_bare = median_us(
                        lambda body=body: client.post(f"{base_url}/infer", json=body).raise_for_status(),
                        args.http_calls,
                    )
                    http_ours = median_us(
                        lambda body=body: client.post(f"{agent_url}/v2/models/mlp/infer", json=body).raise_for_status(),
                        args.http_calls,
                    )
                rows.append((batch, bare, ours, http_bare, http_ours))
        finally:
            agent_server.should_exit = base_server.should_exit = True

    print(
        f"onnxruntime {ort.__version__}, MLP {FEATURES}-{HIDDEN}-{HIDDEN}-{CLASSES}, CPU provider;"
        " medians in microseconds"
    )
    print(f"{'batch':>5} {'bare ORT':>9} {'runner':>9} {'ratio':>6} {'bare HTTP':>10} {'KServe v2':>10} {'ratio':>6}")
    for batch, bare, ours, http_bare, http_ours in rows:
        print(
            f"{batch:>5} {bare:>9.1f} {ours:>9.1f} {ours / bare:>6.2f} {http_bare:>10.1f} {http_ours:>10.1f} "
            f"{http_ours / http_bare:>6.2f}"
        )
    print(
        "ratio: the agent's path over the baseline beside it (runner / bare ORT; KServe v2 route / bare FastAPI route)"
    )


if __name__ == "__main__":
    main()
