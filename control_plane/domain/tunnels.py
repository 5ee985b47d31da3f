"""Who may hold a tunnel, what a device may expose and reach through it, and where its services listen.

The tunnel gateway (control_plane/adapters/tunnel_gateway.py) asks these questions at every connection, forward
request and recheck; the answers are pure so that they can be tested without SSH and read in one place. A device
never chooses where its service listens: the path is derived here from the authenticated device id and the service
name, so device A cannot bind, read or impersonate device B's service. Nothing here touches a socket or a database.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from pathlib import Path

SERVICE_NAME_PATTERN = re.compile(r"[a-z][a-z0-9-]{0,31}")
MAX_SOCKET_PATH = 100  # sockaddr_un holds 108 bytes on Linux (104 on macOS): keep a margin
SOCKET_SUFFIX = ".sock"


def validate_service_name(name: str) -> str:
    """A service name as devices and operators spell it (`kserve`, `ssh`, `metrics`): lower case, no separators."""
    if not SERVICE_NAME_PATTERN.fullmatch(name):
        raise ValueError(
            f"service name {name!r} must be 1-32 characters of lower-case letters, digits or '-', starting with a "
            "letter"
        )
    return name


def service_socket(run_dir: Path, device_id: str, service: str) -> Path:
    """Where the gateway listens for `device_id`'s `service`: `RUN_DIR/DEVICE.SERVICE.sock`, or, when that would
    not fit a socket address, `RUN_DIR/<digest of the id>.SERVICE.sock`. Device ids cannot hold '/' (validated at
    enrollment), so the name never leaves the run directory."""
    validate_service_name(service)
    readable = run_dir / f"{device_id}.{service}{SOCKET_SUFFIX}"
    if len(str(readable)) <= MAX_SOCKET_PATH:
        return readable
    digest = hashlib.sha256(device_id.encode()).hexdigest()[:32]
    return run_dir / f"{digest}.{service}{SOCKET_SUFFIX}"


@dataclass(frozen=True)
class Admission:
    """What the control plane's records say about one device's right to a tunnel, read at each connection."""

    device_id: str
    public_key: str | None  # base64 of the raw ed25519 key enrollment approved; None: not enrolled (pending)
    revoked: bool  # `edgectl devices revoke`: its access is revoked until `devices credentials` admits it again


class Refusal(StrEnum):
    UNKNOWN_DEVICE = "unknown device"
    NOT_ENROLLED = "device not enrolled (no approved key)"
    REVOKED = "device access revoked"
    WRONG_KEY = "key is not the device's enrolled key"


def refusal(admission: Admission | None, offered_key: str) -> Refusal | None:
    """Why a new connection offering `offered_key` is refused, or None: it may connect. Only the enrolled key of a
    device whose access is not revoked gets in; a key replaced by a rotation no longer does."""
    if admission is None:
        return Refusal.UNKNOWN_DEVICE
    if admission.revoked:
        return Refusal.REVOKED
    if admission.public_key is None:
        return Refusal.NOT_ENROLLED
    if admission.public_key != offered_key:
        return Refusal.WRONG_KEY
    return None


class Verdict(StrEnum):
    KEEP = "keep"
    GRACE = "keep: the key was rotated, until the agent reconnects with its new key"
    CLOSE = "close"


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    reason: str = ""


def judge(
    admission: Admission | None,
    session_key: str,
    rotated_since: datetime | None,
    now: datetime,
    grace: timedelta,
) -> Judgement:
    """What to do with an open session at a recheck. A revoked or forgotten device is closed at once. A session
    whose key was replaced by a rotation is kept (the agent reconnects with its new key, and the new connection
    replaces this one) but for no longer than `grace` after the recheck that first saw the change."""
    if admission is None:
        return Judgement(Verdict.CLOSE, Refusal.UNKNOWN_DEVICE.value)
    if admission.revoked:
        return Judgement(Verdict.CLOSE, Refusal.REVOKED.value)
    if admission.public_key is None:
        return Judgement(Verdict.CLOSE, Refusal.NOT_ENROLLED.value)
    if admission.public_key == session_key:
        return Judgement(Verdict.KEEP)
    if rotated_since is not None and now - rotated_since >= grace:
        return Judgement(Verdict.CLOSE, f"key rotated and the old key's grace of {grace.total_seconds():g} s is over")
    return Judgement(Verdict.GRACE, Verdict.GRACE.value)


def cloud_service(services: dict[str, tuple[str, int]], name: str) -> tuple[str, int] | None:
    """The address a device's direct connection to cloud service `name` leads to, or None: refused. A device
    names a service on its allow-list, never an address (the port it sends is ignored: the name decides where the
    connection goes), so it cannot reach anything else."""
    return services.get(name)


def parse_address(value: str) -> tuple[str, int]:
    """`host:port` (IPv6 in brackets) -> (host, port); a clear error otherwise."""
    host, sep, port_text = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"{value!r} is not HOST:PORT (port 1-65535)")
    return host, int(port_text)
