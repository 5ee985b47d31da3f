"""Health that tells the truth: a control plane that cannot reach its broker says so.

A real `edgectl server` on a Mosquitto of the test's own, which the test stops: `/healthz` turns 503 with a body
naming the broker and since when, `edgectl status` prints "degraded: broker unreachable since ..." and exits 1, the
server logs each reconnect attempt with its next delay at WARNING, and all of it recovers when the broker is back.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from tests.support import EDGECTL, ControlPlaneProcess, Mosquitto, python_env, wait_for

pytestmark = pytest.mark.integration

ATTEMPT = re.compile(r"WARNING \S+: MQTT: broker (\S+) not connected; reconnecting in ([0-9.]+) s \(attempt (\d+)\)")


@pytest.fixture
def server(own_broker: Mosquitto, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlaneProcess]:
    running = ControlPlaneProcess(own_broker, tmp_path_factory.mktemp("health") / "data")
    running.start()
    try:
        yield running
    finally:
        running.stop()


def status(server: ControlPlaneProcess) -> subprocess.CompletedProcess[str]:
    argv = [EDGECTL, "--url", server.url, "status"]
    return subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=60)


def health(server: ControlPlaneProcess) -> httpx.Response:
    return httpx.get(f"{server.url}/healthz", timeout=5)


def test_a_lost_broker_makes_healthz_503_and_status_exit_1_until_it_is_back(
    server: ControlPlaneProcess, own_broker: Mosquitto
) -> None:
    assert (health(server).status_code, health(server).json()) == (200, {"status": "ok", "mqtt_connected": True})
    assert status(server).returncode == 0

    own_broker.stop()
    down = wait_for(lambda: (a := health(server)).status_code == 503 and a, what="/healthz to say degraded")
    body = down.json()
    broker = f"{own_broker.host}:{own_broker.port}"
    assert (body["status"], body["mqtt_connected"], body["broker"]) == ("degraded", False, broker)
    assert datetime.fromisoformat(body["since"]) <= datetime.now(UTC)
    assert f"broker {broker} unreachable since" in body["reason"]

    shown = status(server)
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert f"degraded: broker unreachable since {body['since']} ({broker})" in shown.stderr.replace("\n", "")
    assert "degraded" in shown.stdout and broker in shown.stdout

    attempts = wait_for(lambda: ATTEMPT.findall(server.output()) or None, what="a reconnect attempt logged")
    assert all(seen == broker and 0 < float(delay) <= 30 for seen, delay, _ in attempts)

    own_broker.restart()
    wait_for(lambda: health(server).status_code == 200, timeout=60, what="/healthz to recover")
    assert health(server).json() == {"status": "ok", "mqtt_connected": True}
    back = status(server)
    assert back.returncode == 0 and "degraded" not in back.stderr, back.stderr
    numbers = [int(n) for _, _, n in ATTEMPT.findall(server.output())]
    assert numbers == list(range(1, len(numbers) + 1))  # one line per attempt, counted, none repeated
