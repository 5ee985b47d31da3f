"""Operators reach a device's services through the control plane: `/v1/devices/{id}/services/{name}/...` proxies HTTP
to the device's service socket at the tunnel gateway (docs/tunnels.md).

Real processes: `edgectl server`, `edgectl tunnel-gateway`, and an `edge-agent run` enrolled with `edge-agent enroll`,
serving model `lin` (a desired state signed with the control plane's own key, delivered over the real broker) and
exposing its inference API and an HTTP service of the test's through its one tunnel. What is checked is what an
operator notices: a KServe v2 inference answered through the route, bodies streamed both ways (the device sees the
first chunk before the operator sent the last, the operator the first before the device sent the last), each
exchange recorded as a session, the answers for a device that is not connected, a service that refuses or hangs;
and what an attacker does NOT get (the operator's token on the device, another device's socket, a viewer's way in).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from edge_agent.protocol import Signer
from tests.integration.agent.harness import ControlPlaneClient
from tests.integration.tunnel_processes import (
    Agent,
    DeviceWeb,
    Gateway,
    pattern,
    start_agent,
    start_gateway,
    stop,
    tunnel_env,
)
from tests.support import (
    ControlPlaneProcess,
    Echo,
    Mosquitto,
    enroll_device,
    free_port,
    mint_token,
    wait_for,
)
from tests.unit.agent.builders import SAMPLE, build_version, expected_output, signed

pytestmark = pytest.mark.integration

SERVICES = ["kserve", "web", "echo", "dead", "ssh"]
READ_TIMEOUT_S = 3


@pytest.fixture(scope="module")
def server(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    env = tunnel_env(SERVICES) | {"EDGE_CP_TUNNEL__READ_TIMEOUT_S": str(READ_TIMEOUT_S)}
    running = ControlPlaneProcess(mosquitto, tmp_path_factory.mktemp("proxy") / "data", extra_env=env)
    running.start()
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def gateway(server: ControlPlaneProcess) -> Iterator[Gateway]:
    handle = start_gateway(server, tunnel_env(SERVICES))
    try:
        yield handle
    finally:
        stop(handle.process)


@pytest.fixture(scope="module")
def web() -> Iterator[DeviceWeb]:
    service = DeviceWeb()
    try:
        yield service
    finally:
        service.close()


@pytest.fixture(scope="module")
def agent(
    server: ControlPlaneProcess,
    mosquitto: Mosquitto,
    gateway: Gateway,
    web: DeviceWeb,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Agent]:
    """`px-a`, exposing kserve, the test's web service, an echo, and `dead` (a port nothing listens on); serving
    model `lin` v1, signed by the control plane's own key as a rollout would be."""
    root = tmp_path_factory.mktemp("px-a")
    services = {
        "web": f"127.0.0.1:{web.port}",
        "echo": f"127.0.0.1:{Echo('px-a').port}",
        "dead": f"127.0.0.1:{free_port()}",
    }
    started = start_agent(server, mosquitto, gateway, root, "px-a", services)
    publisher = ControlPlaneClient(mosquitto, "px-a")
    try:
        signer = Signer.from_pem((server.data_dir / "signing_key.pem").read_bytes())
        publisher.publish_desired(signed(signer, 1, [build_version(root / "models", 1)], device_id="px-a"))
        wait_for(lambda: started.alive() and serving(started), timeout=60, what="px-a to serve lin v1")
        wait_for(lambda: gateway.socket("px-a", "web").exists(), timeout=60, what="px-a's tunnel")
        yield started
    finally:
        publisher.close()
        stop(started.process)


def serving(agent: Agent) -> bool:
    answer = httpx.get(f"http://127.0.0.1:{agent.serving_port}/v2/models/lin/ready", timeout=2)
    return answer.status_code == 200


def proxy(server: ControlPlaneProcess, token: str, device: str, service: str) -> httpx.Client:
    """A client whose base URL is the device's service through the control plane."""
    return httpx.Client(
        base_url=f"{server.url}/v1/devices/{device}/services/{service}",
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )


@pytest.fixture(scope="module")
def operator(server: ControlPlaneProcess) -> str:
    with server.client() as api:
        return mint_token(api, "operator", "ops-proxy")


def session(server: ControlPlaneProcess, session_id: str) -> dict[str, Any]:
    with server.client() as api:
        answer = api.get(f"/v1/tunnel-sessions/{session_id}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found


def closed(server: ControlPlaneProcess, session_id: str) -> dict[str, Any] | None:
    found = session(server, session_id)
    return found if found["closed_at"] else None


def test_a_kserve_v2_inference_reaches_the_device_through_the_route_and_is_recorded(
    server: ControlPlaneProcess, agent: Agent, operator: str
) -> None:
    body = {"inputs": [{"name": "X", "shape": list(SAMPLE.shape), "datatype": "FP32", "data": SAMPLE.ravel().tolist()}]}
    sent = json.dumps(body).encode()
    with proxy(server, operator, "px-a", "kserve") as device:
        answer = device.post("/v2/models/lin/infer", content=sent, headers={"Content-Type": "application/json"})
    assert answer.status_code == 200, answer.text
    (output,) = answer.json()["outputs"]
    got = np.array(output["data"], dtype=np.float32).reshape(output["shape"])
    np.testing.assert_allclose(got, expected_output(1), rtol=1e-5)

    recorded = wait_for(lambda: closed(server, answer.headers["X-Tunnel-Session"]), what="the session's end")
    assert recorded["who"] == "ops-proxy" and recorded["device_id"] == "px-a" and recorded["service"] == "kserve"
    assert (recorded["kind"], recorded["ended"], recorded["request"]) == (
        "http",
        "completed",
        "POST /v2/models/lin/infer",
    )
    assert recorded["bytes_to_device"] == len(sent)
    assert recorded["bytes_from_device"] == len(answer.content)
    with server.client() as api:
        audit = api.get("/v1/audit", params={"limit": 1000}).json()
    proxied = [r for r in audit if r["path"] == "/v1/devices/px-a/services/kserve/v2/models/lin/infer"]
    assert [(r["name"], r["method"], r["outcome"]) for r in proxied] == [("ops-proxy", "POST", "ok")]  # once
    assert recorded["id"] in proxied[0]["detail"]


def test_the_device_never_sees_the_operators_token_cookies_or_hop_by_hop_headers(
    server: ControlPlaneProcess, agent: Agent, operator: str
) -> None:
    headers = {"Cookie": "cp=secret", "Connection": "X-Private", "X-Private": "1", "X-Asked": "yes"}
    with proxy(server, operator, "px-a", "web") as device:
        answer = device.get("/headers", headers=headers)
    assert answer.status_code == 200, answer.text
    seen = {name.lower(): value for name, value in answer.json()["headers"]}
    assert operator not in json.dumps(seen)
    assert "authorization" not in seen and "cookie" not in seen and "x-private" not in seen
    assert seen["x-asked"] == "yes" and seen["host"] == "device"


def test_bodies_stream_both_ways_without_being_held_whole(
    server: ControlPlaneProcess, agent: Agent, web: DeviceWeb, operator: str
) -> None:
    size = 8 * 1024 * 1024

    def upload() -> Iterator[bytes]:
        yield pattern(0, 64 * 1024)
        # the rest goes only once the device's service holds the first chunk: a proxy that read the whole body
        # before forwarding would wait here forever (and the test time out)
        assert web.upload_started.wait(20), "the device saw nothing before the body was complete"
        web.release_upload.set()
        for offset in range(64 * 1024, size, 1024 * 1024):
            yield pattern(offset, min(1024 * 1024, size - offset))

    with proxy(server, operator, "px-a", "web") as device:
        answer = device.post("/upload", content=upload())
        assert answer.status_code == 200, answer.text
        assert answer.json() == {"bytes": size, "sha256": hashlib.sha256(pattern(0, size)).hexdigest()}

        with device.stream("GET", "/download", params={"size": size}) as download:
            assert download.status_code == 200
            chunks = download.iter_raw()
            first = next(chunks)  # arrives while the device still holds back the rest
            web.release_download.set()
            received = first + b"".join(chunks)
    assert received == pattern(0, size)
    recorded = wait_for(lambda: closed(server, download.headers["X-Tunnel-Session"]), what="the download's end")
    assert (recorded["ended"], recorded["bytes_from_device"]) == ("completed", size)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        pytest.param(
            "/v1/devices/px-nobody/services/web/headers", "device 'px-nobody' is not known", id="unknown-device"
        ),
        pytest.param("/v1/devices/px-a/services/postgres/x", "not one devices expose", id="unallocated-service"),
        pytest.param("/v1/devices/%2e%2e/services/web/headers", "is not known", id="dot-dot-device"),
        pytest.param("/v1/devices/px-a/services/%2e%2e/px-a.web.sock", "not one devices expose", id="dot-dot-service"),
        pytest.param("/v1/devices/px-a/services/web.sock/headers", "not one devices expose", id="socket-name"),
        pytest.param("/v1/devices/px-a.web/services/sock/headers", "not one devices expose", id="split-socket-name"),
    ],
)
def test_a_name_that_is_not_a_devices_own_service_reaches_no_socket(
    server: ControlPlaneProcess, agent: Agent, web: DeviceWeb, operator: str, path: str, expected: str
) -> None:
    before = list(web.seen)
    url = httpx.URL(server.url).copy_with(raw_path=path.encode())
    answer = httpx.get(url, headers={"Authorization": f"Bearer {operator}"}, timeout=10)
    assert answer.status_code == 404, answer.text
    assert expected in answer.json()["detail"]
    assert web.seen == before  # nothing reached the device's service


def test_a_viewer_is_refused_before_anything_reaches_the_device(
    server: ControlPlaneProcess, agent: Agent, web: DeviceWeb
) -> None:
    with server.client() as api:
        viewer = mint_token(api, "viewer", "viewer-proxy")
        before_sessions = api.get("/v1/tunnel-sessions", params={"all": "true", "limit": 1000}).json()
    before = list(web.seen)
    with proxy(server, viewer, "px-a", "web") as device:
        refused = [device.get("/headers"), device.post("/upload", content=b"x" * 1000)]
    assert [r.status_code for r in refused] == [403, 403]
    assert "tunnel:use" in refused[0].json()["detail"]
    assert web.seen == before
    with server.client() as api:
        after_sessions = api.get("/v1/tunnel-sessions", params={"all": "true", "limit": 1000}).json()
        assert api.get("/v1/tunnel-sessions", headers={"Authorization": f"Bearer {viewer}"}).status_code == 403
    assert len(after_sessions) == len(before_sessions)


def test_a_device_that_is_not_connected_gets_a_502_that_says_so(server: ControlPlaneProcess, operator: str) -> None:
    with server.client() as api:
        enroll_device(api, "px-offline")
    with proxy(server, operator, "px-offline", "web") as device:
        answer = device.get("/headers")
    assert answer.status_code == 502
    assert "px-offline/web: the device is not connected" in answer.json()["detail"]
    with server.client() as api:
        (latest, *_) = api.get("/v1/tunnel-sessions", params={"all": "true"}).json()
    assert (latest["device_id"], latest["ended"]) == ("px-offline", "device gone")


def test_a_service_that_refuses_gets_a_502_and_one_that_hangs_a_504(
    server: ControlPlaneProcess, agent: Agent, operator: str
) -> None:
    with proxy(server, operator, "px-a", "dead") as device:
        refused = device.get("/anything")
    assert refused.status_code == 502
    assert "closed the connection without answering" in refused.json()["detail"]
    with proxy(server, operator, "px-a", "web") as device:
        hung = device.get("/hang")
    assert hung.status_code == 504
    assert f"did not answer within {READ_TIMEOUT_S} s" in hung.json()["detail"]
    with server.client() as api:
        latest = api.get("/v1/tunnel-sessions", params={"all": "true", "limit": 2}).json()
    assert [s["ended"] for s in latest] == ["error", "error"]
    assert "did not answer" in latest[0]["error"] and "without answering" in latest[1]["error"]


def test_an_operator_closing_an_http_session_cuts_its_answer_short(
    server: ControlPlaneProcess, agent: Agent, web: DeviceWeb, operator: str
) -> None:
    web.release_download.clear()  # the device sends 64 KiB, then holds the rest back
    try:
        with (
            proxy(server, operator, "px-a", "web") as device,
            device.stream("GET", "/download", params={"size": 1024 * 1024}) as download,
        ):
            chunks = download.iter_raw()
            assert len(next(chunks)) > 0
            session_id = download.headers["X-Tunnel-Session"]
            with server.client() as api:
                closed_now = api.post(f"/v1/tunnel-sessions/{session_id}/close")
            assert closed_now.status_code == 200 and closed_now.json()["ended"] == "closed by operator"
            with pytest.raises(httpx.RemoteProtocolError):  # the connection drops: never a body passed off as whole
                b"".join(chunks)
    finally:
        web.release_download.set()
    assert session(server, session_id)["ended"] == "closed by operator"
