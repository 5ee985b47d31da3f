"""The serving limits set in agent.yaml, and the cap on large request bodies read at once, against a real agent.

The agent runs with small limits (SERVING below) so the tests stay small; every one of them would pass under the
defaults, so each refusal here shows the configured value at work. Requests go over raw sockets where the test must
see what the agent answers before a body is sent: with `Expect: 100-continue` the agent says `100 Continue` only
when it starts reading a body, so a request answered 503 without it was refused unread.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack

import httpx
import numpy as np
import pytest

from tests.integration.agent.serving_agent import ServingAgent, read_response, serving_agent
from tests.support import wait_for
from tests.unit.agent.builders import SAMPLE

pytestmark = pytest.mark.integration

SERVING = {
    "max_body_bytes": 256 * 1024,
    "max_json_bytes": 64 * 1024,
    "max_elements": 40_000,
    "large_request_bytes": 16 * 1024,
    "max_large_requests": 2,
    "body_timeout_s": 60,
}
INFER = "/v2/models/lin/infer"


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServingAgent]:
    with serving_agent(tmp_path_factory.mktemp("limits-agent"), **SERVING) as running:
        yield running


def binary_request(x: np.ndarray) -> tuple[bytes, int]:
    """(body, JSON header length) of a binary-tensor inference of `x`, the answer asked for as JSON."""
    blob = x.astype("<f4").tobytes()
    header = json.dumps(
        {
            "inputs": [
                {"name": "X", "shape": list(x.shape), "datatype": "FP32", "parameters": {"binary_data_size": len(blob)}}
            ]
        }
    ).encode()
    return header + blob, len(header)


def head(length: int | None, header_length: int | None, expect_continue: bool = True) -> bytes:
    lines = [f"POST {INFER} HTTP/1.1", "Host: agent"]
    lines.append("Transfer-Encoding: chunked" if length is None else f"Content-Length: {length}")
    if header_length is not None:
        lines.append(f"Inference-Header-Content-Length: {header_length}")
    if expect_continue:
        lines.append("Expect: 100-continue")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def connect(agent: ServingAgent) -> socket.socket:
    return socket.create_connection(("127.0.0.1", agent.port), timeout=20)


def outputs(answer: str) -> np.ndarray:
    [output] = json.loads(answer.split("\r\n\r\n", 1)[1])["outputs"]
    return np.asarray(output["data"], dtype=np.float32).reshape(output["shape"])


class Holder:
    """A large request the agent admitted (it said 100 Continue), holding a place until its body is sent."""

    def __init__(self, agent: ServingAgent, x: np.ndarray) -> None:
        self.x = x
        self.body, header_length = binary_request(x)
        self.sock = connect(agent)
        self.sock.sendall(head(len(self.body), header_length))
        self.answer = read_response(self.sock)

    @property
    def admitted(self) -> bool:
        return self.answer.startswith("HTTP/1.1 100")

    def finish(self) -> str:
        self.sock.sendall(self.body)
        return read_response(self.sock)


def test_the_limits_in_agent_yaml_are_the_ones_applied(agent):
    with connect(agent) as sock:  # binary: max_body_bytes, declared and refused before a byte is sent
        sock.sendall(head(256 * 1024 + 1, 100, expect_continue=False))
        answer = read_response(sock)
    assert answer.startswith("HTTP/1.1 413") and "over the limit of 262144" in answer, answer
    with connect(agent) as sock:  # JSON: max_json_bytes
        sock.sendall(head(64 * 1024 + 1, None, expect_continue=False))
        answer = read_response(sock)
    assert answer.startswith("HTTP/1.1 413") and "over the limit of 65536" in answer, answer

    rng = np.random.default_rng(7)
    over, under = rng.standard_normal((10_001, 4)), rng.standard_normal((10_000, 4)).astype(np.float32)
    body, length = binary_request(over)  # 40,004 elements: max_elements
    refused = httpx.post(f"{agent.url}{INFER}", content=body, headers={"Inference-Header-Content-Length": str(length)})
    assert refused.status_code == 400 and "over the limit of 40000" in refused.json()["error"]
    body, length = binary_request(under)  # at every limit's edge, and large: it takes a place and is answered
    served = httpx.post(f"{agent.url}{INFER}", content=body, headers={"Inference-Header-Content-Length": str(length)})
    assert served.status_code == 200, served.text
    [y] = served.json()["outputs"]
    assert np.allclose(np.asarray(y["data"]).reshape(y["shape"]), agent.expected(2, under), rtol=1e-5, atol=1e-6)


def test_a_burst_of_large_requests_is_refused_unread_while_small_ones_are_served(agent):
    """What an attacker does not get: the agent reading more than max_large_requests large bodies at once."""
    rng = np.random.default_rng(11)
    holders = [Holder(agent, rng.standard_normal((2048, 4)).astype(np.float32)) for _ in range(2)]  # 32 KiB each
    assert all(h.admitted for h in holders), [h.answer for h in holders]
    with ExitStack() as stack:
        burst = [stack.enter_context(connect(agent)) for _ in range(12)]
        for i, sock in enumerate(burst):  # every one in flight at once; the last ones of unknown size (chunked)
            sock.sendall(head(200 * 1024 if i < 10 else None, 100))
        answers = [read_response(sock) for sock in burst]
    for answer in answers:
        assert answer.startswith("HTTP/1.1 503"), answer  # never `100 Continue`: no byte of the body was read
        assert "retry-after: 1" in answer.lower()
        error = json.loads(answer.split("\r\n\r\n", 1)[1])["error"]
        assert "serving.max_large_requests" in error and "was not read" in error

    for _ in range(5):  # small requests do not wait for a place
        small = httpx.post(f"{agent.url}{INFER}", json={"inputs": [_json_input(SAMPLE)]}, timeout=10)
        assert small.status_code == 200, small.text
        [y] = small.json()["outputs"]
        assert np.allclose(np.asarray(y["data"]).reshape(y["shape"]), agent.expected(2, SAMPLE), rtol=1e-5)

    for holder in holders:  # the admitted ones are answered in full
        answer = holder.finish()
        holder.sock.close()
        assert answer.startswith("HTTP/1.1 200"), answer
        assert np.allclose(outputs(answer), agent.expected(2, holder.x), rtol=1e-5, atol=1e-6)
    again = [Holder(agent, SAMPLE.repeat(400, axis=0)) for _ in range(2)]  # both places were given back
    assert all(h.admitted for h in again), [h.answer for h in again]
    for holder in again:
        assert holder.finish().startswith("HTTP/1.1 200")
        holder.sock.close()


def test_a_client_that_leaves_mid_body_gives_its_place_back(agent):
    leaving = [Holder(agent, SAMPLE.repeat(400, axis=0)) for _ in range(2)]
    assert all(h.admitted for h in leaving)
    for holder in leaving:
        holder.sock.sendall(holder.body[: len(holder.body) // 2])
        holder.sock.close()

    admitted: list[Holder] = []

    def two_admitted() -> bool:
        holder = Holder(agent, SAMPLE.repeat(400, axis=0))
        if holder.admitted:
            admitted.append(holder)
        else:
            holder.sock.close()
        return len(admitted) == 2

    wait_for(two_admitted, timeout=15, what="both places given back after the clients left")
    for holder in admitted:
        assert holder.finish().startswith("HTTP/1.1 200")
        holder.sock.close()
    log = agent.process.output()
    assert "Traceback" not in log and "Exception in ASGI application" not in log, log


def _json_input(x: np.ndarray) -> dict[str, object]:
    return {"name": "X", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}
