"""The tunnel's part of the wire contract as the other side meets it: the gateway a device is told of at
enrollment (a host key that is not an ssh-ed25519 public key is refused, whatever else it carries), link health in
the reported state (bounded), and both left out of their messages when absent, so that a control plane or an agent
that predates them, and refuses unknown fields, keeps working."""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.protocol import HardwareFacts, MessageKind, ReportedState, Signer, seal
from edge_agent.protocol.enrollment import DeviceIdentity
from edge_agent.protocol.tunnel import TunnelEndpoint, TunnelHealth, valid_host_key

ED25519_BLOB = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32)
KEY = "ssh-ed25519 " + base64.b64encode(ED25519_BLOB + bytes(range(32))).decode()
NOW = datetime(2026, 3, 1, tzinfo=UTC)
HW = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")


def test_a_gateway_host_key_line_is_kept_as_the_agent_pins_it() -> None:
    assert valid_host_key(KEY) == KEY
    assert valid_host_key(f"  {KEY} ") == KEY


@pytest.mark.parametrize(
    "line",
    [
        pytest.param("ssh-rsa " + base64.b64encode(ED25519_BLOB + bytes(32)).decode(), id="another-algorithm-name"),
        pytest.param(
            "ssh-ed25519 " + base64.b64encode(struct.pack(">I", 7) + b"ssh-rsa" + bytes(40)).decode(),
            id="an-rsa-key-under-the-ed25519-name",
        ),
        pytest.param("ssh-ed25519 " + base64.b64encode(ED25519_BLOB + bytes(33)).decode(), id="33-byte-key"),
        pytest.param(KEY + " gateway@cp", id="with-a-comment"),
        pytest.param(KEY + "\nssh-ed25519 AAAA", id="a-second-line"),
        pytest.param("ssh-ed25519 not*base64", id="not-base64"),
        pytest.param("ssh-ed25519 " + "A" * 200, id="too-long"),
        pytest.param("", id="empty"),
    ],
)
def test_anything_but_one_ed25519_public_key_is_refused_as_a_host_key(line: str) -> None:
    with pytest.raises(ValueError, match="host key"):
        valid_host_key(line)
    with pytest.raises(ValidationError):
        TunnelEndpoint(host="gw.example", port=2222, host_key=line)


@pytest.mark.parametrize(
    "host",
    [
        pytest.param("-oProxyCommand=touch /tmp/x", id="ssh-option"),
        pytest.param("gw.example tunnel", id="space"),
        pytest.param("gw/../x", id="path"),
        pytest.param("a" * 254, id="too-long"),
    ],
)
def test_a_gateway_address_that_is_not_a_host_is_refused(host: str) -> None:
    with pytest.raises(ValidationError):
        TunnelEndpoint(host=host, port=2222, host_key=KEY)


def _identity(**more: Any) -> DeviceIdentity:
    return DeviceIdentity(
        device_id="dev-1",
        mqtt_username="dev-1",
        mqtt_password="p" * 32,
        control_plane_public_key=Signer.generate().public_key_b64,
        control_plane_token="t" * 40,
        **more,
    )


def test_an_identity_without_a_gateway_is_what_older_agents_read() -> None:
    assert "tunnel" not in json.loads(_identity().model_dump_json())
    announced = _identity(tunnel=TunnelEndpoint(host="gw.example", port=2222, host_key=KEY))
    assert json.loads(announced.model_dump_json())["tunnel"] == {"host": "gw.example", "port": 2222, "host_key": KEY}


def _report(tunnel: TunnelHealth | None = None) -> ReportedState:
    return ReportedState(device_id="dev-1", agent_version="1", applied_generation=0, hardware=HW, tunnel=tunnel)


def test_a_report_without_a_tunnel_is_what_older_control_planes_read() -> None:
    body = json.loads(seal(MessageKind.REPORTED, "dev-1", _report(), NOW))["body"]
    assert "tunnel" not in body
    health = TunnelHealth(connected=True, connected_since=NOW, rtt_ms=3.5, bytes_in=10, bytes_out=20, exposed=["ssh"])
    body = json.loads(seal(MessageKind.REPORTED, "dev-1", _report(health), NOW))["body"]
    assert ReportedState.model_validate(body).tunnel == health


@pytest.mark.parametrize(
    "claim",
    [
        pytest.param({"connected": True, "rtt_ms": -1}, id="negative-rtt"),
        pytest.param({"connected": True, "rtt_ms": 1e12}, id="absurd-rtt"),
        pytest.param({"connected": True, "bytes_in": 2**60}, id="counter-past-2^53"),
        pytest.param({"connected": True, "last_error": "x" * 501}, id="long-error"),
        pytest.param({"connected": True, "exposed": ["../ssh"]}, id="service-as-path"),
        pytest.param({"connected": True, "exposed": [f"s{i}" for i in range(33)]}, id="33-services"),
        pytest.param({"connected": False, "connected_since": NOW.isoformat()}, id="since-while-down"),
        pytest.param({"connected": True, "shell": "id"}, id="unknown-field"),
    ],
)
def test_a_devices_claim_about_its_link_is_bounded(claim: dict[str, Any]) -> None:
    body = json.loads(_report().model_dump_json()) | {"tunnel": claim}
    with pytest.raises(ValidationError):
        ReportedState.model_validate(body)
