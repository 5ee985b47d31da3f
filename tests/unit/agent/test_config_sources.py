"""Where the agent's settings come from: its YAML file (pydantic-settings' YAML source) and the `EDGE_AGENT_*`
environment over it, merged setting by setting; what an unusable file says; and that secrets stay secret."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from edge_agent.cli import app
from edge_agent.config import AgentConfig, ConfigError, load_config
from tests.unit.agent.builders import write_config

runner = CliRunner()


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        pytest.param({}, {"mqtt.host": "broker", "mqtt.port": 1884, "telemetry_interval_s": 1}, id="file"),
        pytest.param(
            {"EDGE_AGENT_MQTT__PORT": "8883"},
            {"mqtt.port": 8883, "mqtt.host": "broker", "mqtt.username": "dev-1"},
            id="env-changes-one-nested-setting-keeps-the-files-others",
        ),
        pytest.param({"EDGE_AGENT_TELEMETRY_INTERVAL_S": "5"}, {"telemetry_interval_s": 5}, id="env-over-file"),
        pytest.param({"EDGE_AGENT_DEVICE_ID": "dev-env"}, {"device_id": "dev-env"}, id="env-over-required-setting"),
    ],
)
def test_precedence(tmp_path, signer, monkeypatch, env, expected) -> None:
    mqtt = {"host": "broker", "port": 1884, "username": "dev-1", "password": "pw"}
    path = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64, mqtt=mqtt)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_config(path)
    for dotted, value in expected.items():
        got: object = config
        for part in dotted.split("."):
            got = getattr(got, part)
        assert got == value, dotted


def test_environment_only(tmp_path, signer, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_DEVICE_ID", "dev-env")
    monkeypatch.setenv("EDGE_AGENT_CONTROL_PLANE_PUBLIC_KEY", signer.public_key_b64)
    assert load_config(None).device_id == "dev-env"


def test_the_environment_wins_over_values_given_in_code(signer, monkeypatch) -> None:
    monkeypatch.setenv("EDGE_AGENT_DEVICE_ID", "dev-env")
    assert AgentConfig(device_id="dev-code", control_plane_public_key=signer.public_key_b64).device_id == "dev-env"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda p: None, "cannot read config file {p}: No such file or directory", id="missing"),
        pytest.param(lambda p: p.mkdir(), "cannot read config file {p}: Is a directory", id="a-folder"),
        pytest.param(lambda p: p.write_text(""), "control_plane_public_key: Field required", id="empty"),
        pytest.param(lambda p: p.write_text("7\n"), "must hold a mapping of settings, not int", id="scalar"),
        pytest.param(lambda p: p.write_text("[]\n"), "must hold a mapping of settings, not list", id="empty-list"),
    ],
)
def test_unusable_files_say_why(tmp_path, make, message) -> None:
    path = tmp_path / "agent.yaml"
    make(path)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert message.format(p=path) in str(caught.value)


def test_secrets_are_never_printed(tmp_path, signer) -> None:
    path = write_config(
        tmp_path / "agent.yaml",
        tmp_path / "data",
        signer.public_key_b64,
        mqtt={"username": "dev-1", "password": "mqtt-secret-value"},
        control_plane_token="token-secret-value-0123",
    )
    config = load_config(path)
    assert config.mqtt.password is not None and config.mqtt.password.get_secret_value() == "mqtt-secret-value"
    for shown in (repr(config), str(config.model_dump()), runner.invoke(app, ["config-help"]).output):
        assert "mqtt-secret-value" not in shown and "token-secret-value" not in shown
