"""Shared helpers for tests: free ports, waiting on conditions with a deadline, a real Mosquitto broker.

Waiting here polls an observable condition (a port accepting, a file appearing, a message delivered) until a
deadline; it never sleeps a fixed time in place of logic.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import httpx

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(condition: Callable[[], T | None], timeout: float = 15.0, what: str = "condition") -> T:
    """Poll `condition` until it returns something truthy; fail the test with `what` after `timeout` s.

    Other exceptions from the condition count as "not yet" (the thing may not be up); an AssertionError means it
    never will be (a process exited, say) and fails at once instead of after the timeout.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except AssertionError:
            raise
        except Exception as exc:
            last_error = exc
            result = None
        if result:
            return result
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {last_error}" if last_error else ""))


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.2):
            return True
    except OSError:
        return False


# The first admin token of every control plane a test starts (EDGE_CP_BOOTSTRAP_TOKEN / settings.bootstrap_token);
# `edgectl` in tests gets it as EDGECTL_TOKEN. Tests that need a weaker identity mint one with `mint_token`.
ADMIN_TOKEN = "edge_test-admin-0123456789abcdefghijklmnopqrstuv"
ADMIN_HEADERS = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def mint_token(api: httpx.Client, role: str, name: str, device_id: str | None = None) -> str:
    """A new token of `role` from the control plane `api` talks to (as admin); returns its secret."""
    body = {"name": name, "role": role, "device_id": device_id}
    answer = api.post("/v1/tokens", json=body, headers=ADMIN_HEADERS)
    assert answer.status_code == 201, answer.text
    secret: str = answer.json()["token"]
    return secret


CONTROL_PLANE_USER = "controlplane"
DEVICE_USERS = tuple(f"dev-{i}" for i in range(1, 13))


def password_for(user: str) -> str:
    return f"pw-{user}"


@dataclass
class Mosquitto:
    """A real Mosquitto broker on a free loopback port, with a password file and an ACL.

    The ACL lets `controlplane` touch everything under `edge/`, and every other user only
    `edge/devices/{its own user name}/...` - the production rule of DESIGN.md, Security.
    """

    workdir: Path
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        passwords = self.workdir / "passwd"
        passwords.write_text("")
        for user in (CONTROL_PLANE_USER, *DEVICE_USERS):
            subprocess.run(
                ["mosquitto_passwd", "-b", str(passwords), user, password_for(user)], check=True, capture_output=True
            )
        acl = self.workdir / "acl"
        acl.write_text(f"user {CONTROL_PLANE_USER}\ntopic readwrite edge/#\n\npattern readwrite edge/devices/%u/#\n")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"acl_file {acl}\n"
            "persistence false\n"
            "user root\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        for path in (passwords, acl, conf):
            path.chmod(0o600)
        return conf

    def start(self) -> None:
        conf = self.write_config()
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(lambda: port_open(self.port, self.host) or self._died(), what=f"mosquitto on port {self.port}")

    def _died(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            err = self.process.stderr.read().decode() if self.process.stderr else ""
            raise AssertionError(f"mosquitto exited with {self.process.returncode}: {err}")
        return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port (retained messages are lost: persistence is off)."""
        self.stop()
        self.process = subprocess.Popen(
            ["mosquitto", "-c", str(self.workdir / "mosquitto.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(lambda: port_open(self.port, self.host) or self._died(), what=f"mosquitto restart on {self.port}")


def mosquitto_available() -> bool:
    return shutil.which("mosquitto") is not None and shutil.which("mosquitto_passwd") is not None


def python_env() -> dict[str, str]:
    """Environment for child processes: this interpreter's venv first on PATH."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    # edgectl acts as the tests' admin and never reads the developer's own saved login.
    env["EDGECTL_TOKEN"] = ADMIN_TOKEN
    env["EDGECTL_CONFIG"] = os.devnull + ".edgectl-tests-have-no-config"
    return env


EDGECTL = str(Path(sys.executable).parent / "edgectl")


@dataclass
class ControlPlaneProcess:
    """`edgectl server` on `data_dir` and `port`; `kill()` is SIGKILL, `start()` again reuses both."""

    broker: Mosquitto
    data_dir: Path
    port: int = field(default_factory=free_port)
    public_url: str | None = None
    process: subprocess.Popen[bytes] | None = None
    client_id: str = field(default_factory=lambda: f"cp-test-{uuid.uuid4().hex[:8]}")
    extra_env: dict[str, str] = field(default_factory=dict)  # more EDGE_CP_* settings, e.g. BUILD_WORKERS=0
    ca_file: Path | None = None  # set: the server runs HTTPS (tls.enabled) and clients verify it against this CA

    @property
    def url(self) -> str:
        return f"{'https' if self.ca_file else 'http'}://127.0.0.1:{self.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        return ssl.create_default_context(cafile=str(self.ca_file)) if self.ca_file else True

    @property
    def log(self) -> Path:
        return self.data_dir.parent / f"{self.data_dir.name}.log"

    def env(self) -> dict[str, str]:
        env = python_env() | {
            "EDGE_CP_MQTT__HOST": self.broker.host,
            "EDGE_CP_MQTT__PORT": str(self.broker.port),
            "EDGE_CP_MQTT__USERNAME": CONTROL_PLANE_USER,
            "EDGE_CP_MQTT__PASSWORD": password_for(CONTROL_PLANE_USER),
            "EDGE_CP_MQTT__CLIENT_ID": self.client_id,
            "EDGE_CP_BOOTSTRAP_TOKEN": ADMIN_TOKEN,
        }
        if self.public_url:
            env["EDGE_CP_PUBLIC_URL"] = self.public_url
        if self.ca_file:
            env["EDGE_CP_TLS__ENABLED"] = "true"
        return env | self.extra_env

    def start(self, timeout: float = 60) -> ControlPlaneProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [EDGECTL, "server", "--host", "127.0.0.1", "--port", str(self.port), "--data-dir", str(self.data_dir)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=self.env())
        wait_for(self._healthy, timeout=timeout, what=f"edgectl server on {self.port}")
        return self

    def _healthy(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            raise AssertionError(f"edgectl server exited with {self.process.returncode}:\n{self.output()[-3000:]}")
        answer = httpx.get(f"{self.url}/healthz", timeout=1, verify=self.verify)
        return bool(answer.json().get("mqtt_connected"))

    def kill(self) -> None:
        """SIGKILL: no shutdown hook runs, nothing is flushed that was not already committed."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def client(self) -> httpx.Client:
        """An HTTP client acting as the bootstrap admin."""
        return httpx.Client(base_url=self.url, timeout=30, headers=ADMIN_HEADERS, verify=self.verify)
