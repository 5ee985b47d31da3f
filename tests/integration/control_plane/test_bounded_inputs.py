"""Bounded work for any input, over real HTTP against the real control plane (issue 9, "a trust boundary").

Each attack that was reproduced is replayed here, and each test asserts what the attacker does NOT get: a core
pinned by an endless ONNX `Loop` (on upload, and in the builder at every restart), memory and storage from a zip
bomb, an upload spooled whole before its size is checked, a rollout stored from a number that overflows, and the
data directory's path in an error. The server runs with small limits so that each bound is reached quickly.
"""

from __future__ import annotations

import json
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.protocol import MessageKind
from tests.integration.control_plane.conftest import (
    DeviceClient,
    RunningServer,
    connect_device,
    server_settings,
    start_server,
)
from tests.integration.control_plane.helpers import deployable, reported, wait_build
from tests.support import Mosquitto, enroll_device, wait_for
from tests.unit.control_plane.onnx_models import linear_model, linear_samples, npz_bytes
from tests.unit.model_builds.hostile_files import endless_loop_model, memory_hog_model, zip_bomb

pytestmark = pytest.mark.integration

MiB = 1 << 20
UPLOAD_LIMIT = 4 * MiB
NPZ_LIMIT = 16 * MiB
EVAL_TIMEOUT_S = 3.0
LIMITS: dict[str, Any] = {
    "max_upload_bytes": UPLOAD_LIMIT,
    "max_npz_bytes": NPZ_LIMIT,
    "model_eval_timeout_s": EVAL_TIMEOUT_S,
    "model_eval_memory_bytes": 2 << 30,
    "build_eval_timeout_s": 60.0,
}
INT64_OVERFLOW = 2**63


def bounded_server(broker: Mosquitto, data_dir: Path, **more: Any) -> RunningServer:
    settings = server_settings(broker, data_dir)
    return start_server(settings.model_copy(update=LIMITS | more))


@pytest.fixture(scope="module")
def own_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """A broker of this module's own: its device (and its retained desired state) touch no other test's."""
    broker = Mosquitto(workdir=tmp_path_factory.mktemp("bounded-mqtt"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="module")
def bounded(own_broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    running = bounded_server(own_broker, tmp_path_factory.mktemp("bounded") / "data")
    try:
        yield running
    finally:
        running.stop()


def upload(api: httpx.Client, name: str, model: bytes, samples: bytes | None = None) -> httpx.Response:
    files = {"model": ("m.onnx", model)} | ({"samples": ("s.npz", samples)} if samples is not None else {})
    return api.post(f"/v1/models/{name}/versions", files=files)


def stored_files(data_dir: Path) -> list[Path]:
    """Every file under the artifact store, its temp folder included."""
    return sorted(p for p in (data_dir / "artifacts").rglob("*") if p.is_file())


def peak_rss_reset() -> None:
    """Start a new high-water mark of this process's resident memory (the server runs in this process)."""
    Path("/proc/self/clear_refs").write_text("5")


def peak_rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM in /proc/self/status")


# -- a model that never finishes ----------------------------------------------------------------------------------
@dataclass
class Timed:
    response: httpx.Response | None = None
    seconds: float = 0.0
    done: threading.Event = field(default_factory=threading.Event)


def test_endless_loop_upload_fails_at_the_timeout_while_the_server_keeps_answering(bounded: RunningServer) -> None:
    outcome = Timed()

    def post() -> None:
        started = time.monotonic()
        with httpx.Client(base_url=bounded.url, headers=bounded.http.headers, timeout=120) as client:
            outcome.response = upload(client, "endless", endless_loop_model())
        outcome.seconds = time.monotonic() - started
        outcome.done.set()

    poster = threading.Thread(target=post)
    poster.start()
    answered_meanwhile: list[float] = []
    while not outcome.done.is_set():  # other requests, while the upload's evaluation runs
        started = time.monotonic()
        assert bounded.http.get("/v1/models").status_code == 200
        if not outcome.done.is_set():
            answered_meanwhile.append(time.monotonic() - started)
    poster.join()

    assert outcome.response is not None and outcome.response.status_code == 422, outcome.response
    detail = outcome.response.json()["detail"]
    assert "model evaluation exceeded 3 s" in detail and detail.startswith("model: ")
    assert EVAL_TIMEOUT_S <= outcome.seconds < EVAL_TIMEOUT_S + 15
    assert answered_meanwhile and max(answered_meanwhile) < 2.0, answered_meanwhile
    assert bounded.http.get("/v1/models/endless").status_code == 404


def test_endless_loop_build_fails_once_and_stays_failed_after_a_restart(mosquitto: Mosquitto, tmp_path: Path) -> None:
    """With its own outputs in the samples the upload never runs it; the builder does, and stops at the bound."""
    server = bounded_server(mosquitto, tmp_path / "data")
    try:
        samples = npz_bytes(**{"input:X": linear_samples_x(), "output:Y": linear_samples_x()})
        answer = upload(server.http, "endless-build", endless_loop_model(), samples)
        assert answer.status_code == 201, answer.text
        started = time.monotonic()
        queued = server.http.post("/v1/models/endless-build/versions/1/builds", json={"targets": ["cpu-x86_64"]})
        assert queued.status_code == 202, queued.text
        (build,) = queued.json()["builds"]
        final = wait_build(server.http, build["id"], timeout=EVAL_TIMEOUT_S + 60)
        assert time.monotonic() - started < EVAL_TIMEOUT_S + 60
        assert final["status"] == "failed"
        assert "model evaluation exceeded 3 s" in final["error"]
        assert str(server.settings.data_dir) not in final["error"]
        assert server.http.get("/v1/models").status_code == 200  # the builder thread is free again
    finally:
        server.stop()

    again = start_server(server.settings)
    try:
        after = again.http.get(f"/v1/builds/{build['id']}").json()
        assert (after["status"], after["error"]) == ("failed", final["error"])
        logs = again.http.get(f"/v1/builds/{build['id']}/logs").text
        assert "back in the queue" not in logs and "queued again" not in logs
    finally:
        again.stop()


def linear_samples_x() -> Any:
    import numpy as np

    return np.arange(8, dtype=np.float32).reshape(2, 4)


# -- zip bombs ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "route",
    [
        pytest.param("samples", id="upload-samples"),
        pytest.param("calibration", id="calibration-set"),
    ],
)
def test_zip_bomb_is_refused_before_it_is_inflated(bounded: RunningServer, route: str) -> None:
    api = bounded.http
    bomb = zip_bomb(2 << 30)  # 2 GiB of zeros behind a ~2 MiB file
    assert len(bomb) < UPLOAD_LIMIT
    if route == "calibration":
        assert upload(api, "bomb-target", linear_model(), linear_samples()).status_code == 201
    before = stored_files(bounded.settings.data_dir)
    peak_rss_reset()
    baseline = peak_rss()
    if route == "samples":
        answer = upload(api, "bombed", linear_model(), bomb)
    else:
        answer = api.post("/v1/models/bomb-target/versions/1/calibration", files={"file": ("c.npz", bomb)})
    grown = peak_rss() - baseline

    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith(f"{route}: ") and f"at most {NPZ_LIMIT} are accepted" in detail
    assert grown < 64 * MiB, f"refusing the bomb grew the server's peak memory by {grown / MiB:.0f} MiB"
    assert stored_files(bounded.settings.data_dir) == before
    assert api.get("/v1/models/bombed").status_code == 404


# -- upload sizes -------------------------------------------------------------------------------------------------
def test_an_oversized_file_is_refused_with_413_and_nothing_is_kept(bounded: RunningServer) -> None:
    before = stored_files(bounded.settings.data_dir)
    answer = upload(bounded.http, "too-big", b"\x08" * (UPLOAD_LIMIT + 1))
    assert answer.status_code == 413, answer.text
    assert answer.json()["detail"] == f"model: the file is larger than the {UPLOAD_LIMIT}-byte limit"
    assert stored_files(bounded.settings.data_dir) == before
    assert bounded.http.get("/v1/models/too-big").status_code == 404


def test_an_oversized_body_is_refused_while_it_streams(bounded: RunningServer) -> None:
    """Raw HTTP, chunked, no Content-Length: the server answers 413 long before the client could send it all."""
    host, port = "127.0.0.1", bounded.settings.port
    boundary = "b0undary"
    head = (
        f"POST /v1/models/streamed/versions HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Authorization: {bounded.http.headers['authorization']}\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    part = f'--{boundary}\r\nContent-Disposition: form-data; name="model"; filename="m.onnx"\r\n\r\n'.encode()
    chunk = b"\x08" * (256 * 1024)
    offered = 256 * MiB  # far past the body limit (2 files x 4 MiB + 1 MiB)
    before = stored_files(bounded.settings.data_dir)
    sent = 0
    with socket.create_connection((host, port), timeout=30) as conn:
        conn.sendall(head.encode() + b"%x\r\n%s\r\n" % (len(part), part))
        try:
            while sent < offered:
                conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the server stopped reading: that is the point
        answer = read_http_response(conn)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than the 9437184-byte limit" in answer
    assert sent < offered // 4, f"the client could send {sent / MiB:.0f} MiB before the refusal"
    assert stored_files(bounded.settings.data_dir) == before


def read_http_response(conn: socket.socket) -> bytes:
    received = b""
    conn.settimeout(30)
    try:
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            data = conn.recv(65536)
            if not data:
                break
            received += data
    except (ConnectionResetError, TimeoutError):
        pass
    return received


def test_a_json_body_past_its_limit_is_refused_with_413(bounded: RunningServer) -> None:
    padding = "x" * (bounded.settings.max_body_bytes + 1)
    answer = bounded.http.post(
        "/v1/rollouts", json={"model": "m", "version": 1, "selector": {"labels": {"a": padding}}}
    )
    assert answer.status_code == 413
    assert f"larger than the {bounded.settings.max_body_bytes}-byte limit" in answer.json()["detail"]


# -- numbers ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("method", "path"),
    [
        pytest.param("GET", f"/v1/models/m/versions/{INT64_OVERFLOW}", id="get-version"),
        pytest.param("GET", f"/v1/models/m/versions/{INT64_OVERFLOW}/samples", id="get-samples"),
        pytest.param("GET", f"/v1/models/m/versions/{INT64_OVERFLOW}/builds", id="list-builds"),
        pytest.param("POST", f"/v1/models/m/versions/{INT64_OVERFLOW}/builds", id="create-builds"),
        pytest.param("POST", f"/v1/models/m/versions/{INT64_OVERFLOW}/calibration", id="calibration"),
        pytest.param("GET", f"/v1/rollouts/r/events?after={INT64_OVERFLOW}", id="rollout-events-after"),
    ],
)
def test_integers_past_64_bits_in_paths_and_queries_answer_422(bounded: RunningServer, method: str, path: str) -> None:
    body: dict[str, Any] = (
        {"json": {"targets": ["cpu-x86_64"]}} if path.endswith("/builds") and method == "POST" else {}
    )
    if path.endswith("/calibration"):
        body = {"files": {"file": ("c.npz", linear_samples(with_outputs=False))}}
    answer = bounded.http.request(method, path, **body)
    assert answer.status_code == 422, answer.text


ROLLOUT = {"model": "numbers", "version": 1, "selector": {"labels": {"site": "numbers"}}}


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({"device_deadline_s": 1e308}, id="deadline-1e308"),
        pytest.param({"device_deadline_s": 31 * 24 * 3600}, id="deadline-31-days"),
        pytest.param({"bake_s": 1e308}, id="bake-1e308"),
        pytest.param({"version": INT64_OVERFLOW}, id="version-2**63"),
        pytest.param({"strategy": {"type": "canary", "canary": {"count": INT64_OVERFLOW}}}, id="canary-count-2**63"),
        pytest.param({"bake_s": 60, "gates": {"min_requests": INT64_OVERFLOW}}, id="min-requests-2**63"),
        pytest.param({"gates": {"max_p99_ms": 1e308}}, id="p99-1e308"),
        pytest.param({"gates": {"max_p99_ratio": 1e308}}, id="p99-ratio-1e308"),
    ],
)
def test_numbers_past_their_bounds_store_no_rollout_and_lock_no_device(
    bounded: RunningServer, numbers_device: str, change: dict[str, Any]
) -> None:
    api = bounded.http
    rollouts_before = api.get("/v1/rollouts").json()
    answer = api.post(
        "/v1/rollouts", content=json.dumps(ROLLOUT | change), headers={"content-type": "application/json"}
    )
    assert answer.status_code == 422, answer.text
    assert api.get("/v1/rollouts").json() == rollouts_before
    assert api.get(f"/v1/devices/{numbers_device}").json()["desired_generation"] == 0


def test_after_the_refusals_the_devices_are_free_for_a_real_rollout(
    bounded: RunningServer, numbers_device: str
) -> None:
    answer = bounded.http.post("/v1/rollouts", json=ROLLOUT)
    assert answer.status_code == 201, answer.text
    assert [d["device_id"] for d in answer.json()["devices"]] == [numbers_device]


@pytest.fixture(scope="module")
def numbers_device(bounded: RunningServer, own_broker: Mosquitto) -> Iterator[str]:
    deployable(bounded.http, "numbers")
    enroll_device(bounded.http, "dev-1", labels={"site": "numbers"})
    device: DeviceClient = connect_device(own_broker, "dev-1")
    device.send(MessageKind.REPORTED, reported("dev-1", labels={"site": "numbers"}))
    wait_for(lambda: bounded.http.get("/v1/devices/dev-1").json()["reported"], what="dev-1 reported")
    yield "dev-1"
    device.client.disconnect()
    device.client.loop_stop()


# -- no host paths in errors --------------------------------------------------------------------------------------
def external_data_model() -> bytes:
    from tests.unit.control_plane.test_upload_validation import external_data_model as make

    return make()


def unknown_op_model() -> bytes:
    from tests.unit.model_builds.test_ort_sandbox import unknown_op_model as make

    return make()


Upload = Callable[[httpx.Client], httpx.Response]

BAD_UPLOADS: list[Any] = [
    pytest.param(lambda api: upload(api, "p1", b"\x00garbage\xff" * 10), "model: ", id="not-onnx"),
    pytest.param(lambda api: upload(api, "p2", external_data_model()), "model: ", id="external-data"),
    pytest.param(lambda api: upload(api, "p3", unknown_op_model()), "model: ", id="runtime-cannot-load"),
    pytest.param(lambda api: upload(api, "p4", memory_hog_model()), "model: ", id="memory-hog"),
    pytest.param(lambda api: upload(api, "p5", linear_model(), b"PK not a zip"), "samples: ", id="samples-not-npz"),
    pytest.param(lambda api: upload(api, "p6", linear_model(), zip_bomb(64 * MiB)), "samples: ", id="samples-bomb"),
    pytest.param(
        lambda api: api.post("/v1/models/nope/versions/1/calibration", files={"file": ("c.npz", b"x")}),
        "model 'nope'",
        id="calibration-unknown-model",
    ),
]


@pytest.mark.parametrize(("send", "field_prefix"), BAD_UPLOADS)
def test_no_error_names_a_host_path(bounded: RunningServer, send: Upload, field_prefix: str) -> None:
    answer = send(bounded.http)
    assert 400 <= answer.status_code < 500, answer.text
    detail = answer.json()["detail"]
    assert detail.startswith(field_prefix), detail
    for path in {str(bounded.settings.data_dir), str(bounded.settings.data_dir.resolve()), tempfile.gettempdir()}:
        assert path not in detail, detail
