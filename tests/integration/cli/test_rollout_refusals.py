"""A device that refuses a rollout, and one that cannot answer, as an operator sees them through `edgectl` against a
real `edgectl server`, real Mosquitto and a real `edge-agent run`.

- An agent pinning the wrong signing key refuses the desired state at once: the rollout shows that device failed
  with the agent's own reason within seconds (its deadline is the default 300 s), and its abort does not wait
  either (the agent refuses the restore too: "could not restore").
- A rollout waiting for an offline device says so (`waiting for`: offline since ...); `devices forget` is refused
  while the rollout holds the device, and `devices forget --force` ends the wait at once.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from edge_agent.protocol import Signer
from tests.integration.cli.test_edgectl import (  # noqa: F401  (the module's `server` fixture)
    Server,
    edgectl,
    ok_json,
    server,
    stop,
    tiny_model,
    training_code,
)
from tests.support import Mosquitto, enroll_agent, free_port, python_env, wait_for

pytestmark = pytest.mark.integration

DEFAULT_DEADLINE_S = 300


def run_agent(
    server: Server,  # noqa: F811
    mosquitto: Mosquitto,
    tmp_path: Path,
    site: str,
    pin_another_key: bool = False,
) -> tuple[subprocess.Popen[bytes], Path]:
    """`edge-agent run` for device cli-SITE, enrolled with an auto-approving token; `pin_another_key`: its config
    then pins a key the control plane does not sign with (as an operator's mistake would)."""
    created = ok_json(
        server, "enrollment-tokens", "create", f"cli-{site}", "--label", f"site={site}", "--auto-approve",
        "--max-uses", "1", "--expires-in", "10m",
    )  # fmt: skip
    config = tmp_path / "agent.yaml"
    base = {"data_dir": str(tmp_path / "agent-data"), "serving": {"host": "127.0.0.1", "port": free_port()}}
    config.write_text(yaml.safe_dump(base))
    written = enroll_agent(mosquitto, server.url, created["token"], config, f"cli-{site}")  # type: ignore[index]
    if pin_another_key:
        config.write_text(yaml.safe_dump(written | {"control_plane_public_key": Signer.generate().public_key_b64}))
    log = tmp_path / "agent.log"
    with log.open("wb") as out:
        agent = subprocess.Popen(
            [str(Path(sys.executable).parent / "edge-agent"), "run", "--config", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=python_env(),
        )
    return agent, log


def a_built_model(server: Server, tmp_path: Path, site: str, name: str) -> None:  # noqa: F811
    devices = wait_for(lambda: ok_json(server, "devices", "list", "--selector", f"site={site}"), what="enrollment")
    gpu_class = devices[0]["gpu_class"]  # type: ignore[index]
    ok_json(server, "models", "push", name, str(tiny_model(tmp_path / "v1.onnx")))
    ok_json(server, "build", name, "1", "--target", gpu_class, "--wait")


def test_a_device_pinning_the_wrong_key_fails_the_rollout_at_once_with_the_agents_reason(
    server: Server,  # noqa: F811
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    agent, log = run_agent(server, mosquitto, tmp_path, "wrongkey", pin_another_key=True)
    try:
        a_built_model(server, tmp_path, "wrongkey", "refused")
        wait_for(
            lambda: ok_json(server, "devices", "show", "cli-wrongkey")["presence"] == "online",  # type: ignore[index]
            what="the agent online",
        )
        started = time.monotonic()
        created = edgectl(server, "rollout", "create", "-m", "refused", "-v", "1", "-l", "site=wrongkey", "--wait")
        took = time.monotonic() - started

        said = created.stdout + created.stderr
        assert created.returncode == 1, said + log.read_text()[-2000:]
        assert took < DEFAULT_DEADLINE_S / 10, f"took {took:.0f} s: the rollout waited for a deadline"
        assert "aborted" in said and "refused by the device: signature:" in said
        assert "this agent pins key" in said  # the agent's own reason, word for word
        assert "could not restore cli-wrongkey" in said  # the restore was refused too, and not waited for

        rollout_id = ok_json(server, "rollout", "list")[0]["id"]  # type: ignore[index]
        shown = edgectl(server, "rollout", "show", rollout_id)
        assert shown.returncode == 0, shown.stderr
        assert "restore_failed" in shown.stdout and "refused by the device" in shown.stdout
        assert "steps" in shown.stdout and "failed <= 0" in shown.stdout  # the step's gate threshold
        watched = edgectl(server, "rollout", "watch", rollout_id, "--timeout", "30")
        assert watched.returncode == 1 and "refused by the device" in watched.stdout + watched.stderr
    finally:
        stop(agent)


def test_a_rollout_says_it_waits_for_an_offline_device_and_forget_force_ends_the_wait(
    server: Server,  # noqa: F811
    mosquitto: Mosquitto,
    tmp_path: Path,
) -> None:
    agent, _ = run_agent(server, mosquitto, tmp_path, "gone")
    try:
        a_built_model(server, tmp_path, "gone", "waited")
    finally:
        stop(agent)
    wait_for(
        lambda: ok_json(server, "devices", "show", "cli-gone")["presence"] == "offline",  # type: ignore[index]
        what="the agent offline",
    )
    created = ok_json(server, "rollout", "create", "-m", "waited", "-v", "1", "-l", "site=gone")
    rollout_id = created["id"]  # type: ignore[index]

    shown = edgectl(server, "rollout", "show", rollout_id)
    assert shown.returncode == 0, shown.stderr
    assert "waiting for" in shown.stdout and "offline since" in shown.stdout and "cli-gone" in shown.stdout

    refused = edgectl(server, "devices", "forget", "cli-gone")
    assert refused.returncode == 1 and f"unfinished rollout {rollout_id}" in refused.stdout + refused.stderr
    assert "`edgectl devices forget cli-gone --force` forgets it anyway" in refused.stdout + refused.stderr

    forced = edgectl(server, "devices", "forget", "cli-gone", "--force")
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert "no rollout waits for it any more" in forced.stdout + forced.stderr
    ended = ok_json(server, "rollout", "show", rollout_id)
    assert ended["phase"] == "aborted", ended  # type: ignore[index]
    assert "forgotten by the operator" in str(ended["reason"])  # type: ignore[index]
    gone = edgectl(server, "devices", "show", "cli-gone")
    assert gone.returncode == 1 and "not known" in gone.stdout + gone.stderr
