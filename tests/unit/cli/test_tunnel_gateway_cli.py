"""`edgectl tunnel-gateway` and the agent's `tunnel` settings as a user meets them (typer's CliRunner): help, the
host key printed for agents to pin, and settings that are wrong refused with the setting named and the fix."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.cli.main import app
from edge_agent.cli import app as agent_app
from edge_agent.protocol import Signer

runner = CliRunner()


def test_help_says_what_it_runs_and_how_revocation_reaches_it() -> None:
    shown = runner.invoke(app, ["tunnel-gateway", "--help"])
    assert shown.exit_code == 0
    text = " ".join(re.sub(r"[│╭╮╰╯─]", " ", shown.output).split())  # rich wraps help inside a box
    for words in ("--print-host-key", "tunnel.host_key", "devices revoke", "within a second", "mode 0600"):
        assert words in text


def test_the_host_key_is_made_once_private_and_printed_for_agents(tmp_path: Path) -> None:
    first = runner.invoke(app, ["tunnel-gateway", "--data-dir", str(tmp_path), "--print-host-key"])
    again = runner.invoke(app, ["tunnel-gateway", "--data-dir", str(tmp_path), "--print-host-key"])
    assert first.exit_code == 0, first.output
    assert first.output.startswith("ssh-ed25519 ") and first.output == again.output
    assert (tmp_path / "tunnel_host_key").stat().st_mode & 0o777 == 0o600
    assert "PRIVATE" not in first.output


def test_a_host_key_others_can_read_is_refused_with_the_fix(tmp_path: Path) -> None:
    runner.invoke(app, ["tunnel-gateway", "--data-dir", str(tmp_path), "--print-host-key"])
    (tmp_path / "tunnel_host_key").chmod(0o644)
    refused = runner.invoke(app, ["tunnel-gateway", "--data-dir", str(tmp_path), "--print-host-key"])
    assert refused.exit_code == 1
    assert "readable by others" in refused.output and "chmod 600" in refused.output


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        pytest.param("tunnel:\n  services: ['../etc']\n", "tunnel.services", id="service-name-as-path"),
        pytest.param("tunnel:\n  cloud_services: {registry: 'nohost'}\n", "HOST:PORT", id="cloud-address"),
        pytest.param("tunnel:\n  cloud_services: {'A B': '10.0.0.1:80'}\n", "service name", id="cloud-name"),
        pytest.param("tunnel:\n  recheck_interval_s: 0\n", "tunnel.recheck_interval_s", id="no-recheck"),
        pytest.param("tunnel:\n  typo: 1\n", "tunnel.typo", id="unknown-setting"),
    ],
)
def test_bad_gateway_settings_name_the_setting(tmp_path: Path, settings: str, named: str) -> None:
    config = tmp_path / "cp.yaml"
    config.write_text(settings)
    refused = runner.invoke(app, ["tunnel-gateway", "--config", str(config), "--data-dir", str(tmp_path)])
    assert refused.exit_code == 1
    assert named in refused.output
    assert not (tmp_path / "tunnel_host_key").exists()  # nothing started


@pytest.mark.parametrize(
    ("tunnel", "named"),
    [
        pytest.param("{enabled: true}", "tunnel.host_key", id="no-pinned-host-key"),
        pytest.param("{services: {'../x': '127.0.0.1:22'}}", "service name", id="service-name"),
        pytest.param("{services: {ssh: 'localhost'}}", "HOST:PORT", id="service-address"),
        pytest.param("{cloud_services: {registry: 0}}", "cloud_services.registry", id="cloud-port"),
    ],
)
def test_bad_agent_tunnel_settings_name_the_setting(tmp_path: Path, tunnel: str, named: str) -> None:
    config = tmp_path / "agent.yaml"
    key = Signer.generate().public_key_b64
    config.write_text(f"device_id: dev-1\ncontrol_plane_public_key: '{key}'\ntunnel: {tunnel}\n")
    refused = runner.invoke(agent_app, ["status", "--config", str(config)])
    assert refused.exit_code == 2
    assert named in refused.output
