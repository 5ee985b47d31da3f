"""`edgectl login / whoami / tokens` as an operator uses them, against a real `edgectl server` that wrote its
first admin token to data_dir/admin-token: exit codes, what is printed, the config file on disk."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import EDGECTL, ControlPlaneProcess, Mosquitto, python_env

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(mosquitto: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    running = ControlPlaneProcess(mosquitto, tmp_path_factory.mktemp("login-server") / "data")
    running.extra_env = {"EDGE_CP_BOOTSTRAP_TOKEN": ""}  # unset: the server writes data_dir/admin-token
    running.start()
    try:
        yield running
    finally:
        running.stop()


def run(config: Path, *args: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = python_env() | {"EDGECTL_CONFIG": str(config)}
    env.pop("EDGECTL_TOKEN")
    if token is not None:
        env["EDGECTL_TOKEN"] = token
    return subprocess.run([EDGECTL, *args], capture_output=True, text=True, env=env, timeout=60)


def test_login_saves_url_and_token_for_the_owner_only(server: ControlPlaneProcess, tmp_path: Path) -> None:
    config = tmp_path / "cfg" / "edgectl.yaml"
    refused = run(config, "--url", server.url, "models", "list")
    assert refused.returncode == 1
    assert "401" in refused.stderr and "edgectl login" in refused.stderr

    admin_token = server.data_dir / "admin-token"
    logged = run(config, "--url", server.url, "login", "--token-file", str(admin_token))
    assert logged.returncode == 0, logged.stderr
    assert "as bootstrap-admin (admin)" in logged.stderr
    assert config.stat().st_mode & 0o777 == 0o600
    assert admin_token.read_text().strip() in config.read_text()

    me = run(config, "--json", "whoami")  # no --url, no token: both come from the saved config
    assert me.returncode == 0, me.stderr
    assert json.loads(me.stdout)["role"] == "admin"


def test_a_config_others_can_read_is_refused(server: ControlPlaneProcess, tmp_path: Path) -> None:
    config = tmp_path / "edgectl.yaml"
    assert (
        run(config, "--url", server.url, "login", "--token-file", str(server.data_dir / "admin-token")).returncode == 0
    )
    config.chmod(0o644)
    answer = run(config, "models", "list")
    assert answer.returncode == 1
    assert "others can read it" in answer.stderr and "chmod 600" in answer.stderr


def test_a_wrong_token_is_not_saved(server: ControlPlaneProcess, tmp_path: Path) -> None:
    config = tmp_path / "edgectl.yaml"
    answer = run(config, "--url", server.url, "login", token="edge_not-a-real-token")
    assert answer.returncode == 1 and "unknown token" in answer.stderr
    assert not config.exists()


def test_tokens_create_list_revoke(server: ControlPlaneProcess, tmp_path: Path) -> None:
    config = tmp_path / "edgectl.yaml"
    admin = (server.data_dir / "admin-token").read_text().strip()
    created = run(config, "--url", server.url, "--json", "tokens", "create", "ci", "--role", "viewer",
                  "--expires-in", "2h", token=admin)  # fmt: skip
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)
    assert token["role"] == "viewer" and token["expires_at"] is not None

    viewer = run(config, "--url", server.url, "--json", "whoami", token=token["token"])
    assert json.loads(viewer.stdout)["name"] == "ci"
    forbidden = run(config, "--url", server.url, "tokens", "list", token=token["token"])
    assert forbidden.returncode == 1 and "403" in forbidden.stderr

    listed = run(config, "--url", server.url, "tokens", "list", token=admin)
    assert listed.returncode == 0 and "ci" in listed.stdout and token["token"] not in listed.stdout
    revoked = run(config, "--url", server.url, "tokens", "revoke", token["id"], token=admin)
    assert revoked.returncode == 0, revoked.stderr
    after = run(config, "--url", server.url, "whoami", token=token["token"])
    assert after.returncode == 1 and "token revoked" in after.stderr

    bad = run(config, "--url", server.url, "tokens", "create", "x", "--role", "viewer", "--expires-in", "soon",
              token=admin)  # fmt: skip
    assert bad.returncode == 2 and "not a duration" in bad.stderr
