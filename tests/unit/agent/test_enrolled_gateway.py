"""The tunnel gateway a device is told of at enrollment, as the agent keeps and uses it: `edge-agent enroll` writes
it as `tunnel.gateway` next to the operator's own tunnel settings, the agent's tunnel then pins its host key with no
hand-copied line, an explicit tunnel.host / port / host_key still wins, and a later identity without a gateway
takes the stale one away."""

from __future__ import annotations

import base64
import struct
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.adapters.tunnel import tunnel_options
from edge_agent.config import ConfigError, load_config
from edge_agent.enrollment import EnrollOptions, write_identity
from edge_agent.protocol import Signer
from edge_agent.protocol.enrollment import DeviceIdentity
from edge_agent.protocol.tunnel import TunnelEndpoint


def host_key(seed: int) -> str:
    blob = struct.pack(">I", 11) + b"ssh-ed25519" + struct.pack(">I", 32) + bytes([seed] * 32)
    return "ssh-ed25519 " + base64.b64encode(blob).decode()


ANNOUNCED = TunnelEndpoint(host="gw.example", port=2200, host_key=host_key(1))
CP_KEY = Signer.generate().public_key_b64


def identity(tunnel: TunnelEndpoint | None) -> DeviceIdentity:
    return DeviceIdentity(
        device_id="dev-1",
        mqtt_username="dev-1",
        mqtt_password="p" * 32,
        control_plane_public_key=CP_KEY,
        control_plane_token="edge_" + "t" * 40,
        tunnel=tunnel,
    )


def enrolled(tmp_path: Path, existing: dict[str, Any], tunnel: TunnelEndpoint | None) -> Path:
    config = tmp_path / "agent.yaml"
    key = tmp_path / "device-key.pem"
    key.write_bytes(Signer.generate().to_pem())
    base = {"data_dir": str(tmp_path / "data"), **existing}
    write_identity(EnrollOptions(url="https://cp.example", config_path=config), base, identity(tunnel), key)
    return config


def test_the_announced_gateway_is_written_and_pinned_without_a_hand_copied_key(tmp_path: Path) -> None:
    mine = {"tunnel": {"enabled": True, "services": {"ssh": "127.0.0.1:22"}}}
    config = enrolled(tmp_path, mine, ANNOUNCED)
    written = yaml.safe_load(config.read_text())["tunnel"]
    assert written == {**mine["tunnel"], "gateway": {"host": "gw.example", "port": 2200, "host_key": host_key(1)}}
    agent = load_config(config)
    options = tunnel_options(agent.device_id, agent.tunnel, tmp_path / "device-key.pem", ("127.0.0.1", 8500))
    assert (options.host, options.port, options.host_key) == ("gw.example", 2200, host_key(1))
    assert options.services["ssh"] == ("127.0.0.1", 22)


@pytest.mark.parametrize(
    ("explicit", "expected"),
    [
        pytest.param({"host_key": host_key(2)}, ("gw.example", 2200, host_key(2)), id="host-key"),
        pytest.param({"host": "10.0.0.9", "port": 22}, ("10.0.0.9", 22, host_key(1)), id="address"),
    ],
)
def test_what_the_operator_set_wins_over_the_announced_gateway(
    tmp_path: Path, explicit: dict[str, Any], expected: tuple[str, int, str]
) -> None:
    config = enrolled(tmp_path, {"tunnel": {"enabled": True, **explicit}}, ANNOUNCED)
    assert load_config(config).tunnel.endpoint() == expected


def test_an_identity_without_a_gateway_takes_the_stale_one_away(tmp_path: Path) -> None:
    stale = {"tunnel": {"gateway": ANNOUNCED.model_dump(), "cloud_services": {"registry": 15000}}}
    config = enrolled(tmp_path, stale, None)
    assert yaml.safe_load(config.read_text())["tunnel"] == {"cloud_services": {"registry": 15000}}
    assert "tunnel" not in yaml.safe_load(enrolled(tmp_path, {}, None).read_text())


def test_a_tunnel_with_no_host_key_from_anywhere_says_where_to_get_one(tmp_path: Path) -> None:
    config = enrolled(tmp_path, {"tunnel": {"enabled": True}}, None)
    with pytest.raises(ConfigError, match=r"tunnel\.public_host"):
        load_config(config)


def test_a_gateway_host_key_edited_into_something_else_is_refused(tmp_path: Path) -> None:
    config = enrolled(tmp_path, {}, ANNOUNCED)
    data = yaml.safe_load(config.read_text())
    data["tunnel"]["gateway"]["host_key"] = "ssh-rsa AAAAB3NzaC1yc2E"
    config.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=r"tunnel\.gateway\.host_key"):
        load_config(config)
