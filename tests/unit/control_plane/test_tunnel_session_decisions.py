"""The pure parts of reaching devices' services through their tunnels: when a session has been idle or open too
long, which headers cross the proxy, what a session records it asked for, which requests the proxy's body limit
and permission checks see, and how Ansible is told to go through a tunnel. No sockets here: the processes are in
tests/integration/cli/test_tunnel_proxy.py, test_tunnel_open.py and tests/integration/ansible/test_tunnel_ssh.py."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime, timedelta

import pytest

from control_plane.api.auth import _template_pattern
from control_plane.api.body_limits import _proxied
from control_plane.api.permissions import SERVICE_PROXY, requirement
from control_plane.cli.tunnel_forward import Endpoint
from control_plane.domain.identity import Permission
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.tunnel_sessions import (
    NOT_FORWARDED_TO_DEVICE,
    NOT_RELAYED_FROM_DEVICE,
    SessionEnd,
    SessionLimits,
    forwarded_headers,
    overdue,
    request_line,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIMITS = SessionLimits(idle=timedelta(minutes=15), absolute=timedelta(hours=8))


@pytest.mark.parametrize(
    ("open_for", "quiet_for", "expected"),
    [
        pytest.param(timedelta(minutes=20), timedelta(minutes=14), None, id="busy-enough"),
        pytest.param(timedelta(minutes=20), timedelta(minutes=15), SessionEnd.IDLE_TIMEOUT, id="idle"),
        pytest.param(timedelta(hours=8), timedelta(0), SessionEnd.ABSOLUTE_TIMEOUT, id="open-too-long"),
        pytest.param(timedelta(hours=9), timedelta(hours=1), SessionEnd.ABSOLUTE_TIMEOUT, id="both-absolute-wins"),
        pytest.param(timedelta(0), timedelta(0), None, id="just-opened"),
    ],
)
def test_when_a_session_must_close(open_for: timedelta, quiet_for: timedelta, expected: SessionEnd | None) -> None:
    now = T0 + open_for
    assert overdue(T0, now - quiet_for, now, LIMITS) is expected


def test_the_device_gets_neither_the_operators_credentials_nor_hop_by_hop_headers() -> None:
    sent = [
        ("Authorization", "Bearer edge_secret"),
        ("Cookie", "session=1"),
        ("Host", "cp.example.net"),
        ("Connection", "keep-alive, X-Hop"),
        ("X-Hop", "only for the first hop"),
        ("Transfer-Encoding", "chunked"),
        ("Proxy-Authorization", "Basic x"),
        ("Content-Type", "application/json"),
        ("Content-Length", "12"),
        ("X-Trace", "abc"),
    ]
    assert forwarded_headers(sent, NOT_FORWARDED_TO_DEVICE) == [
        ("content-type", "application/json"),
        ("content-length", "12"),
        ("x-trace", "abc"),
    ]


def test_the_operator_gets_no_cookie_a_device_sets_on_the_control_planes_origin() -> None:
    answer = [("Set-Cookie", "admin=1; Path=/"), ("Content-Type", "text/plain"), ("Keep-Alive", "timeout=5")]
    assert forwarded_headers(answer, NOT_RELAYED_FROM_DEVICE) == [("content-type", "text/plain")]


def test_a_session_records_method_and_path_but_never_the_query() -> None:
    assert request_line("post", "v2/models/m/infer") == "POST /v2/models/m/infer"
    assert request_line("GET", "/x" * 1000).startswith("GET /x/x") and len(request_line("GET", "/x" * 1000)) == 512
    assert "\x00" not in request_line("GET", "/a\x00b")


@pytest.mark.parametrize(
    ("path", "proxied"),
    [
        pytest.param("/v1/devices/d1/services/kserve/v2/models/m/infer", True, id="inference"),
        pytest.param("/v1/devices/d1/services/web/", True, id="service-root"),
        pytest.param("/v1/devices/d1/enrollment", False, id="enrollment"),
        pytest.param("/v1/models/m/versions", False, id="upload"),
        pytest.param("/v1/devices/d1/services", False, id="no-service"),
    ],
)
def test_only_bodies_on_their_way_to_a_device_get_the_streaming_limit(path: str, proxied: bool) -> None:
    assert _proxied(path) is proxied


def test_the_proxy_route_spans_segments_and_needs_tunnel_use_in_either_spelling() -> None:
    pattern = _template_pattern(SERVICE_PROXY)
    assert pattern.fullmatch("/v1/devices/d1/services/kserve/v2/models/m/infer")
    assert not pattern.fullmatch("/v1/devices/d1/x/services/kserve/v2")
    assert requirement("POST", SERVICE_PROXY) is Permission.TUNNEL_USE
    assert requirement("POST", "/v1/devices/{device_id}/services/{service}/{path}") is Permission.TUNNEL_USE


def test_a_tunnel_connection_is_ssh_whose_transport_is_the_proxy_command() -> None:
    command = shlex.join(["/venv/bin/python", "-m", "control_plane.adapters.socket_pipe", "/data/tunnels/d 1.ssh.sock"])
    found = AnsibleConnection(host="10.0.0.9", port=2200, user="edge", connection="tunnel").inventory_vars(command)
    assert found == {
        "ansible_connection": "ssh",
        "ansible_user": "edge",
        "ansible_ssh_common_args": found["ansible_ssh_common_args"],
    }
    option, value = shlex.split(found["ansible_ssh_common_args"])  # as ansible splits it
    assert option == "-o" and value == f"ProxyCommand={command}"
    assert shlex.split(value.removeprefix("ProxyCommand="))[-1] == "/data/tunnels/d 1.ssh.sock"  # as ssh's shell does
    with pytest.raises(ValueError, match="tunnel connection needs"):
        AnsibleConnection(connection="tunnel").inventory_vars()


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        pytest.param("http://cp:8080", "ws://cp:8080/v1/devices/dev-1/tunnel/ssh", id="plain"),
        pytest.param("https://cp.example.net/edge/", "wss://cp.example.net/edge/v1/devices/dev-1/tunnel/ssh", id="tls"),
    ],
)
def test_edgectl_opens_its_websocket_on_the_control_planes_own_host(base: str, expected: str) -> None:
    assert Endpoint(base, "dev-1", "ssh", "t", True).url == expected


def test_a_hostile_device_id_stays_one_path_segment() -> None:
    assert Endpoint("http://cp", "../../v1/audit?x=", "ssh", None, True).url == (
        "ws://cp/v1/devices/..%2F..%2Fv1%2Faudit%3Fx%3D/tunnel/ssh"
    )
