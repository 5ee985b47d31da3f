"""Where the control plane's settings come from: the file (pydantic-settings' YAML source), the `EDGE_CP_*`
environment over it, the command line's flags over both, merged setting by setting; and what a bad file says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import SecretStr

from control_plane.settings import ServerSettings

FILE = {"port": 8100, "mqtt": {"host": "broker.file", "port": 1884, "password": "from-file"}}


def _load(tmp_path: Path, file: dict[str, Any] | None, env: dict[str, str], flags: dict[str, Any], monkeypatch):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    path = None
    if file is not None:
        path = tmp_path / "cp.yaml"
        path.write_text(yaml.safe_dump(file))
    return ServerSettings.load(path, data_dir=tmp_path / "data", **flags)


@pytest.mark.parametrize(
    ("file", "env", "flags", "expected"),
    [
        pytest.param(FILE, {}, {}, {"port": 8100, "mqtt.host": "broker.file", "mqtt.port": 1884}, id="file"),
        pytest.param(None, {"EDGE_CP_PORT": "8200"}, {}, {"port": 8200, "mqtt.host": "127.0.0.1"}, id="env-only"),
        pytest.param(FILE, {"EDGE_CP_PORT": "8200"}, {}, {"port": 8200}, id="env-over-file"),
        pytest.param(
            FILE,
            {"EDGE_CP_MQTT__PORT": "8883"},
            {},
            {"mqtt.port": 8883, "mqtt.host": "broker.file", "port": 8100},
            id="env-changes-one-nested-setting-keeps-the-files-others",
        ),
        pytest.param(FILE, {"EDGE_CP_PORT": "8200"}, {"port": 8300}, {"port": 8300}, id="flag-over-env-and-file"),
        pytest.param(FILE, {}, {"host": "0.0.0.0"}, {"host": "0.0.0.0", "port": 8100}, id="flag-and-file-merge"),
        pytest.param({}, {}, {}, {"port": 8080, "mqtt.port": 1883}, id="empty-file-defaults"),
    ],
)
def test_precedence(tmp_path, monkeypatch, file, env, flags, expected) -> None:
    settings = _load(tmp_path, file, env, flags, monkeypatch)
    for dotted, value in expected.items():
        got: Any = settings
        for part in dotted.split("."):
            got = getattr(got, part)
        assert got == value, dotted


def test_the_file_and_the_environment_are_checked_together(tmp_path, monkeypatch) -> None:
    """production's refusals look at the merged settings: the password the file holds satisfies the environment's
    `production`."""
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    file = {"tls": {"enabled": True}, "mqtt": {"password": "s3cret-enough", "tls_ca_file": str(ca)}}
    settings = _load(tmp_path, file, {"EDGE_CP_ENVIRONMENT": "production"}, {}, monkeypatch)
    assert settings.environment.value == "production"


def test_the_mqtt_password_is_a_secret(tmp_path, monkeypatch) -> None:
    settings = _load(tmp_path, FILE, {}, {}, monkeypatch)
    assert isinstance(settings.mqtt.password, SecretStr)
    assert settings.mqtt.password.get_secret_value() == "from-file"
    assert "from-file" not in repr(settings) and "from-file" not in str(settings.model_dump())


@pytest.mark.parametrize(
    ("content", "error", "message"),
    [
        pytest.param("- a\n- b\n", ValueError, "cp.yaml: expected a mapping of settings at the top level", id="list"),
        pytest.param("just text\n", ValueError, "expected a mapping of settings", id="scalar"),
        pytest.param("[]\n", ValueError, "expected a mapping of settings", id="empty-list"),
        pytest.param("port: [unclosed\n", ValueError, "cp.yaml: not valid YAML", id="bad-yaml"),
    ],
)
def test_bad_files_say_why(tmp_path, content, error, message) -> None:
    path = tmp_path / "cp.yaml"
    path.write_text(content)
    with pytest.raises(error, match=message.replace("[", r"\[")):
        ServerSettings.load(path)


def test_a_missing_file_is_named(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        ServerSettings.load(tmp_path / "nope.yaml")


def test_a_file_is_read_only_by_the_load_that_names_it(tmp_path, monkeypatch) -> None:
    _load(tmp_path, FILE, {}, {}, monkeypatch)
    assert ServerSettings().port == 8080
