"""Shared helpers for tests: free ports, waiting on conditions with a deadline, a real Mosquitto broker.

Waiting here polls an observable condition (a port accepting, a file appearing, a message delivered) until a
deadline; it never sleeps a fixed time in place of logic.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

T = TypeVar("T")


_HANDED_OUT: set[int] = set()  # the ports `free_port` returned in this process


@functools.cache
def _reservations() -> int:
    """The machine-wide file whose byte N this process holds locked while port N is its own. POSIX record locks: the
    kernel drops them when the process exits, however it exits; the file stays open for that reason (closing any
    descriptor of it would drop them all)."""
    path = Path(tempfile.gettempdir()) / f"edge-test-ports-{os.geteuid()}.lock"
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o600)


def free_port() -> int:
    """A loopback port nothing listens on, that no other test process will be handed while this one runs.

    The kernel's free port is released before the test's server binds it (often seconds later, in a subprocess); in
    that window another pytest-xdist worker (or another test session) asking the kernel could get the same one.
    So each port returned is reserved for the rest of this process's life with a record lock on its byte of one
    machine-wide file: a port another process holds is skipped, and this process never hands out a port twice
    (a test that stops a server and starts it again on its port does not lose it to a later test's server).
    """
    reservations = _reservations()
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port in _HANDED_OUT:
            continue
        try:
            fcntl.lockf(reservations, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
        except OSError:  # another process holds it: its server may not have bound it yet
            continue
        _HANDED_OUT.add(port)
        return port


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
# The broker's queue limits at fleet size (docs/operations.md): Mosquitto's defaults (20 in flight, 1,000 queued per
# client) drop a burst of device messages on their way to the control plane.
BROKER_LIMITS = "max_inflight_messages 1000\nmax_queued_messages 100000\nmax_queued_bytes 268435456\n"
DEVICE_USERS = tuple(f"dev-{i}" for i in range(1, 16))


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
    tls_dir: Path | None = None  # holds ca.pem, broker.pem, broker-key.pem (`issue_test_pki`): TLS-only listener

    def listener(self) -> str:
        """The listener line, and its TLS options when the broker speaks TLS."""
        line = f"listener {self.port} {self.host}\n"
        if self.tls_dir is None:
            return line
        files = {"cafile": "ca.pem", "certfile": "broker.pem", "keyfile": "broker-key.pem"}
        return line + "".join(f"{option} {self.tls_dir / name}\n" for option, name in files.items())

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
            self.listener() + "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"acl_file {acl}\n"
            "persistence false\n"
            f"{BROKER_LIMITS}"
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

    def add_user(self, user: str, password: str) -> None:
        """Give the password file `user` (or its new password) and have the running broker reload it (SIGHUP),
        then wait until it accepts the login: what the broker-accounts port does for an enrolled device when the
        control plane administers no broker (docs/security.md)."""
        passwords = self.workdir / "passwd"
        subprocess.run(["mosquitto_passwd", "-b", str(passwords), user, password], check=True, capture_output=True)
        if self.process is not None:
            self.process.send_signal(signal.SIGHUP)
        wait_for(lambda: broker_accepts(self, user, password), what=f"mosquitto to accept {user}")


DYNSEC_PLUGIN = "/usr/lib/x86_64-linux-gnu/mosquitto_dynamic_security.so"
OBSERVER_USER = "observer"  # kept by the control plane (mqtt.admin_keep_clients): the tests' eyes on the broker


@dataclass
class DynsecMosquitto(Mosquitto):
    """A real Mosquitto whose accounts are Mosquitto's dynamic-security plugin (docs/security.md, Broker identity).

    `mosquitto_ctrl dynsec init` makes `controlplane` the plugin's admin, as an operator would; the control plane
    pins it and gives it its own role on its first reconcile. `observer` may publish and receive anything under
    `edge/` and administer the plugin: tests watch deliveries with it and change the broker behind the control
    plane's back. Devices exist only once the control plane provisions them.
    """

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        accounts = self.workdir / "dynamic-security.json"
        config = _dynsec_init(accounts, CONTROL_PLANE_USER)
        observer = _dynsec_init(self.workdir / "observer.json", OBSERVER_USER)["clients"][0]
        observer["roles"] = [{"rolename": OBSERVER_USER}]
        everything = [("edge/#", kind) for kind in ("publishClientSend", "publishClientReceive", "subscribePattern")]
        control = [("$CONTROL/dynamic-security/#", kind) for kind in ("publishClientSend", "publishClientReceive")]
        acls = [*everything, *control, ("$CONTROL/dynamic-security/#", "subscribePattern")]
        config["clients"].append(observer)
        config["roles"].append(
            {"rolename": OBSERVER_USER, "acls": [{"acltype": k, "topic": t, "allow": True} for t, k in acls]}
        )
        accounts.write_text(json.dumps(config))
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            self.listener() + "allow_anonymous false\n"
            f"plugin {DYNSEC_PLUGIN}\n"
            f"plugin_opt_config_file {accounts}\n"
            "persistence false\n"
            f"{BROKER_LIMITS}"
            "user root\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
        )
        for path in (accounts, conf):
            path.chmod(0o600)
        return conf

    def ctrl(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`mosquitto_ctrl dynsec ARGS...` as the observer (an administrator the control plane does not own)."""
        login = ["-h", self.host, "-p", str(self.port), "-u", OBSERVER_USER, "-P", password_for(OBSERVER_USER)]
        return subprocess.run(
            ["mosquitto_ctrl", *login, "dynsec", *args], check=True, capture_output=True, text=True, timeout=30
        )


def _dynsec_init(path: Path, admin: str) -> dict[str, Any]:
    """A fresh plugin configuration whose only client is `admin` (password `password_for(admin)`)."""
    path.unlink(missing_ok=True)
    subprocess.run(
        ["mosquitto_ctrl", "dynsec", "init", str(path), admin, password_for(admin)], check=True, capture_output=True
    )
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def issue_test_pki(control_plane_data_dir: Path, broker_certs: Path) -> Path:
    """The control plane's CA (created in its data dir, as its first start with tls.enabled would) and a broker
    certificate from it for 127.0.0.1 and localhost in `broker_certs` (what `edgectl certs issue broker` writes);
    returns the CA file every TLS client of the test pins."""
    from datetime import UTC, datetime

    from control_plane.adapters.pki import CertificateAuthority

    now = datetime.now(UTC)
    ca = CertificateAuthority(control_plane_data_dir / "pki")
    ca.ensure(now)
    ca.ensure_server("broker", ["127.0.0.1", "localhost"], now, directory=broker_certs)
    (broker_certs / "ca.pem").write_bytes(ca.pem)
    return ca.cert_file


def dynsec_available() -> bool:
    return Path(DYNSEC_PLUGIN).exists() and shutil.which("mosquitto_ctrl") is not None


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


# -- devices join the fleet the way production devices do: `edge-agent enroll` with an enrollment token -------------

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


def broker_accepts(broker: Mosquitto, user: str, password: str) -> bool:
    """Whether the broker answers a CONNECT as `user` with success (a real login, then a clean disconnect)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    answers: list[bool] = []
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"login-probe-{uuid.uuid4().hex[:8]}")
    client.username_pw_set(user, password)
    client.on_connect = lambda _c, _u, _f, reason, _p: answers.append(not reason.is_failure)
    try:
        client.connect(broker.host, broker.port, keepalive=5)
        deadline = time.monotonic() + 5
        while not answers and time.monotonic() < deadline:
            client.loop(timeout=0.1)
        client.disconnect()
    except OSError:
        return False
    return bool(answers and answers[0])


def enrollment_token(
    api: httpx.Client, name: str, labels: dict[str, str] | None = None, auto_approve: bool = True, **more: Any
) -> str:
    """A new enrollment token (as admin) with preset `labels`; `more`: expires_in_s, max_uses, channel, gpu_class."""
    body = {"name": name, "labels": labels or {}, "auto_approve": auto_approve, **more}
    answer = api.post("/v1/enrollment-tokens", json=body, headers=ADMIN_HEADERS)
    assert answer.status_code == 201, answer.text
    secret: str = answer.json()["token"]
    return secret


def run_enroll(
    url: str, token: str | None, config: Path, *args: str, timeout: float = 90
) -> subprocess.CompletedProcess[str]:
    """`edge-agent enroll --url URL --config CONFIG ARGS...` with the token in the environment (never argv)."""
    env = python_env() | ({"EDGE_AGENT_ENROLL_TOKEN": token} if token else {})
    argv = [EDGE_AGENT, "enroll", "--url", url, "--config", str(config), *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def enroll_agent(
    broker: Mosquitto | None, url: str, token: str, config: Path, device_id: str, *args: str
) -> dict[str, Any]:
    """Enroll an agent whose base settings are in `config` (data dir, serving, ...); the identity is merged into it.
    With `broker`, its password file learns the device's new password (no broker accounts here). Returns the
    config as written."""
    import yaml

    done = run_enroll(
        url, token, config, "--device-id", device_id, "--poll-initial-s", "0.2", "--poll-max-s", "1", *args
    )
    assert done.returncode == 0, f"edge-agent enroll exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    written: dict[str, Any] = yaml.safe_load(config.read_text())
    if broker is not None:
        broker.add_user(written["mqtt"]["username"], written["mqtt"]["password"])
    return written


def enroll_device(
    api: httpx.Client,
    device_id: str,
    labels: dict[str, str] | None = None,
    gpu_class: str = "cpu-x86_64",
    channel: str = "mqtt",
    hardware: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """An operator enrolls a device by hand (`PUT /v1/devices/{id}/enrollment`): for tests whose "device" is a bare
    MQTT client logged in with the broker's fixed test passwords rather than an agent with a key."""
    hardware = {"gpu_class": gpu_class, "arch": "x86_64", "cpu_count": 2, "memory_mb": 2048, **(hardware or {})}
    body = {"channel": channel, "labels": labels or {}, "gpu_class": gpu_class, "hardware": hardware}
    answer = api.put(f"/v1/devices/{device_id}/enrollment", json=body, headers=ADMIN_HEADERS)
    assert answer.status_code == 200, answer.text
    enrolled: dict[str, Any] = answer.json()
    return enrolled


class Echo:
    """A TCP service on loopback answering every line with `NAME: line` (a service behind a tunnel, in tests)."""

    def __init__(self, name: str) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.name = name
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            for line in conn.makefile("rb"):
                conn.sendall(self.name.encode() + b": " + line)
