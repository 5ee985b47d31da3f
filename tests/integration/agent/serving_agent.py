"""A real `edge-agent run` serving model `lin`, installed by `edge-agent apply` (no broker), for the serving tests.

Each generation in `generations` installs `lin` v{generation} in turn, so with (1, 2) the agent starts with v2
active and v1 in its previous slot, as after a restart. `sessions` holds onnxruntime sessions of the same model
files, run by the tests to check every answer.
"""

from __future__ import annotations

import socket
import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort

from edge_agent.protocol import Signer
from tests.integration.agent.harness import AgentProcess
from tests.support import free_port, python_env, wait_for
from tests.unit.agent.builders import build_version, signed, write_config


@dataclass
class ServingAgent:
    url: str
    port: int
    sessions: dict[int, ort.InferenceSession]
    process: AgentProcess

    def expected(self, version: int, x: np.ndarray) -> np.ndarray:
        (y,) = self.sessions[version].run(None, {"X": x})
        return np.asarray(y)

    def restart(self) -> None:
        """SIGTERM (the agent stops cleanly), then a new `edge-agent run` on the same data directory, until ready."""
        assert self.process.terminate() == 0, self.process.output()
        self.process.start()
        self.wait_ready()

    def wait_ready(self) -> None:
        wait_for(lambda: ready(self.url), timeout=30, what=f"agent ready\n{self.process.output()}")


def ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@contextmanager
def serving_agent(tmp: Path, generations: Sequence[int] = (2,), **serving: Any) -> Iterator[ServingAgent]:
    """The agent, ready, with `serving` settings (agent.yaml `serving:`) beside its host and port."""
    signer, port = Signer.generate(), free_port()
    config = write_config(
        tmp / "agent.yaml",
        tmp / "data",
        signer.public_key_b64,
        device_id="dev-oip",
        mqtt={"enabled": False},
        serving={"host": "127.0.0.1", "port": port, **serving},
    )
    sessions = {}
    for generation in generations:
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
    agent = ServingAgent(f"http://127.0.0.1:{port}", port, sessions, AgentProcess(config, tmp / "agent.log").start())
    try:
        agent.wait_ready()
        yield agent
    finally:
        agent.process.kill()


def read_response(sock: socket.socket) -> str:
    """One HTTP response from a raw socket: its head, and its body as far as its Content-Length says."""
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
