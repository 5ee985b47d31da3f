"""A real Mosquitto for a simulated fleet: one account per device (a password file of N users, hashed in one
`mosquitto_passwd -U` pass), the production ACL (a device reaches only `edge/devices/{its user name}/...`), and
the file-descriptor limit raised so that 10,000 connections fit. Persistence is on, as on a production broker:
`restart` (the reconnect storm) stops it with SIGTERM, which saves retained messages (desired states, reports,
presence) to `mosquitto.db`, and starts it again on the same port with the same accounts, which loads them.

Device passwords are derived from a seed (`device_password`), so a simulator in another process can log in with
the accounts a broker was given. Must never be used outside benchmarks and tests: the seed is not a secret.
"""

from __future__ import annotations

import hashlib
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.fleet_simulation.mux import raise_fd_limit

CONTROL_PLANE_USER = "controlplane"


def device_password(seed: str, device_id: str) -> str:
    return hashlib.sha256(f"{seed}:{device_id}".encode()).hexdigest()[:24]


def write_password_file(path: Path, accounts: Iterable[tuple[str, str]]) -> None:
    """A Mosquitto password file for `accounts` ((user, password) pairs), hashed in place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{user}:{password}\n" for user, password in accounts))
    path.chmod(0o600)
    subprocess.run(["mosquitto_passwd", "-U", str(path)], check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FleetBroker:
    """Mosquitto on a free loopback port for `device_ids` plus the control plane's account."""

    workdir: Path
    device_ids: list[str]
    seed: str = "sim"
    control_plane_password: str = "pw-controlplane"
    max_queued_messages: int = 100_000
    persistence: bool = True
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        passwords = self.workdir / "passwd"
        accounts = [(d, device_password(self.seed, d)) for d in self.device_ids]
        write_password_file(passwords, [(CONTROL_PLANE_USER, self.control_plane_password), *accounts])
        acl = self.workdir / "acl"
        acl.write_text(f"user {CONTROL_PLANE_USER}\ntopic readwrite edge/#\n\npattern readwrite edge/devices/%u/#\n")
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(
            f"listener {self.port} {self.host}\n"
            "allow_anonymous false\n"
            f"password_file {passwords}\n"
            f"acl_file {acl}\n"
            f"persistence {'true' if self.persistence else 'false'}\n"
            f"persistence_location {self.workdir}/\n"
            "autosave_interval 0\n"  # saved on shutdown only: no disk writes while a benchmark measures
            f"max_queued_messages {self.max_queued_messages}\n"
            "user root\n"
            f"log_dest file {self.workdir / 'mosquitto.log'}\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        for path in (acl, conf):
            path.chmod(0o600)
        return conf

    def start(self) -> FleetBroker:
        raise_fd_limit(len(self.device_ids) + 2048)  # Mosquitto inherits the limit
        return self._spawn(self.write_config())

    def restart(self) -> float:
        """Stop (SIGTERM: every connection drops, retained messages are saved) and start again on the same port,
        password file and ACL, loading what was saved; returns the seconds the broker was not listening."""
        conf = self.workdir / "mosquitto.conf"
        start = time.monotonic()
        self.stop()
        self._spawn(conf)
        return time.monotonic() - start

    def _spawn(self, conf: Path) -> FleetBroker:
        argv = ["mosquitto", "-c", str(conf)]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"mosquitto exited with {self.process.returncode}: {err}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def dropped_messages(self) -> int:
        """How many times Mosquitto logged that it dropped outgoing messages to a client."""
        log = self.workdir / "mosquitto.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        return text.count("Outgoing messages are being dropped")
