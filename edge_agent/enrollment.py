"""`edge-agent enroll`: make this device's key pair, ask the control plane for an identity, write it to agent.yaml.

The private key is made here, written with mode 0600 and never sent: requests carry the public key and are signed
with the private one. While an operator has not decided, the device asks again with jittered, capped backoff (the
same key, so it is the same request); a denial ends the command with a clear message and it does not ask again.
A rotation (`--rotate`) signs with the current key too and is sent with the device's own token.
The identity (device id, broker credentials, the key to pin, the artifact credential, and the tunnel gateway with
its host key when the control plane announces one) is merged into agent.yaml, written atomically with mode 0600.
Nothing here logs a secret.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import yaml

from edge_agent.core.backoff import next_delay
from edge_agent.core.errors import AgentError, EnrollmentError
from edge_agent.protocol import HardwareFacts, SignatureError, Signer
from edge_agent.protocol.enrollment import DeviceIdentity, EnrollAnswer, EnrollmentStatus, EnrollRequest, signed_request

KEY_FILE_NAME = "device-key.pem"


class EnrollmentDenied(AgentError):
    """An operator denied this device's key: asking again would not change it."""


class Asker(Protocol):
    def ask(self, request: EnrollRequest, credential: str) -> EnrollAnswer: ...


@dataclass(frozen=True)
class EnrollOptions:
    url: str
    config_path: Path
    token: str | None = None
    device_id: str | None = None
    ca_file: Path | None = None
    rotate: bool = False
    wait_timeout_s: float | None = None  # None: wait for an operator as long as it takes
    poll_initial_s: float = 5.0
    poll_max_s: float = 300.0


@dataclass
class Enrollment:
    options: EnrollOptions
    hardware: HardwareFacts
    client: Asker
    say: Callable[[str], None]
    sleep: Callable[[float], None] = time.sleep
    monotonic: Callable[[], float] = time.monotonic
    draw: Callable[[], float] = random.random
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def run(self) -> DeviceIdentity:
        existing = read_config(self.options.config_path)
        key_path = Path(existing.get("device_key_file") or self.options.config_path.parent / KEY_FILE_NAME)
        key, previous, credential, device_id = self._credentials(existing, key_path)
        started = self.monotonic()
        attempt = 0
        while True:
            try:
                answer = self.client.ask(
                    signed_request(key, self.hardware, self.clock(), device_id, previous), credential
                )
            except EnrollmentError as exc:
                if exc.permanent:
                    raise
                self._wait(attempt, started, None, f"{exc}; asking again")
            else:
                device_id = answer.device_id
                if answer.status is EnrollmentStatus.DENIED:
                    raise EnrollmentDenied(f"{answer.message}; not asking again")
                if answer.status is EnrollmentStatus.APPROVED and answer.identity is not None:
                    if previous is not None:
                        _pending_key_path(key_path).replace(key_path)
                    write_identity(self.options, existing, answer.identity, key_path)
                    return answer.identity
                if answer.status is EnrollmentStatus.APPROVED:
                    raise EnrollmentError("the control plane approved but sent no identity", permanent=True)
                self._wait(attempt, started, answer.retry_after_s, answer.message)
            attempt += 1

    def _credentials(self, existing: dict[str, Any], key_path: Path) -> tuple[Signer, Signer | None, str, str | None]:
        """(key to enroll, current key for a rotation, credential to send, device id asked for)."""
        if not self.options.rotate:
            if not self.options.token:
                raise EnrollmentError(
                    "an enrollment token is needed (--token or EDGE_AGENT_ENROLL_TOKEN)", permanent=True
                )
            key = load_key(key_path) if key_path.exists() else new_key(key_path)
            return key, None, self.options.token, self.options.device_id or existing.get("device_id")
        token = existing.get("control_plane_token")
        if not (key_path.exists() and token and existing.get("device_id")):
            raise EnrollmentError(
                f"--rotate needs an enrolled {self.options.config_path} (device_id, control_plane_token) and its "
                f"key {key_path}",
                permanent=True,
            )
        pending = _pending_key_path(key_path)
        key = load_key(pending) if pending.exists() else new_key(pending)
        return key, load_key(key_path), str(token), str(existing["device_id"])

    def _wait(self, attempt: int, started: float, hint_s: float | None, why: str) -> None:
        delay = next_delay(attempt, self.options.poll_initial_s, self.options.poll_max_s, self.draw(), hint_s)
        timeout = self.options.wait_timeout_s
        if timeout is not None and self.monotonic() + delay - started > timeout:
            raise EnrollmentError(f"{why}; gave up after waiting {timeout:g} s", permanent=True)
        self.say(f"{why}; asking again in {delay:.1f} s")
        self.sleep(delay)


def _pending_key_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".new")


def new_key(path: Path) -> Signer:
    key = Signer.generate()
    write_private(path, key.to_pem())
    return key


def load_key(path: Path) -> Signer:
    try:
        return Signer.from_pem(path.read_bytes())
    except (OSError, ValueError, SignatureError) as exc:
        raise EnrollmentError(f"cannot use the device key {path}: {exc}", permanent=True) from exc


def read_config(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise EnrollmentError(f"cannot read {path}: {exc}", permanent=True) from exc
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise EnrollmentError(f"{path} must hold a mapping of settings", permanent=True)
    return loaded


def write_identity(options: EnrollOptions, existing: dict[str, Any], identity: DeviceIdentity, key_path: Path) -> None:
    """Merge the identity into the agent's config and write it atomically, readable by this user only."""
    config = dict(existing)
    mqtt = dict(config.get("mqtt") or {})
    mqtt.update(username=identity.mqtt_username, password=identity.mqtt_password, topic_prefix=identity.topic_prefix)
    if identity.mqtt_host is not None:
        mqtt["host"] = identity.mqtt_host
    if identity.mqtt_port is not None:
        mqtt["port"] = identity.mqtt_port
    if identity.broker_ca_pem is not None:  # the broker speaks TLS: verify it against the CA it chains to
        broker_ca = options.config_path.parent / "broker-ca.pem"
        broker_ca.write_text(identity.broker_ca_pem)
        mqtt["tls_ca_file"] = str(broker_ca.resolve())
    config.update(
        device_id=identity.device_id,
        control_plane_url=options.url.rstrip("/"),
        control_plane_public_key=identity.control_plane_public_key,
        control_plane_token=identity.control_plane_token,
        device_key_file=str(key_path.resolve()),
        mqtt=mqtt,
    )
    if options.ca_file is not None:
        config["control_plane_ca_file"] = str(options.ca_file.resolve())
    config["tunnel"] = _with_gateway(config.get("tunnel"), identity)
    if not config["tunnel"]:
        del config["tunnel"]
    write_private(options.config_path, yaml.safe_dump(config, sort_keys=False).encode())


def _with_gateway(tunnel: Any, identity: DeviceIdentity) -> dict[str, Any]:
    """The agent's `tunnel` settings with the gateway the control plane announced as `tunnel.gateway` (validated
    by the wire model), or without one when it announces none. Settings of the operator's own are kept: an explicit
    tunnel.host, tunnel.port or tunnel.host_key wins over the announced gateway when the agent reads them."""
    settings = dict(tunnel) if isinstance(tunnel, dict) else {}
    if identity.tunnel is None:
        settings.pop("gateway", None)
    else:
        settings["gateway"] = identity.tunnel.model_dump(mode="json")
    return settings


def write_private(path: Path, data: bytes) -> None:
    """Replace `path` with `data`, mode 0600 from the first byte, atomically (a crash leaves the old file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates it 0600
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        Path(temp).replace(path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise
