"""The tunnel gateway's use cases: who may connect, which open tunnels must close, where services listen, which
cloud services devices may reach. The gateway adapter (control_plane/adapters/tunnel_gateway.py) asks; this module
answers from the control plane's records (read at each connection and each recheck) and the settings.

How a revocation reaches the gateway: the gateway runs as its own process and reads the same database. Every
`recheck_interval_s` it hands this service the open tunnels (device id and key) and this service reads their
admissions in batches of 500 ids (one query each): a revoked or forgotten device is closed within one interval,
a device that rotated its key keeps its open tunnel until its agent reconnects with the new key (bounded by
`rotation_grace_s`), and no other device's tunnel is touched. No notification channel from the control plane is
needed, and a gateway that missed nothing can miss nothing: the records are the only truth.
This module never writes the records and never sees a private key.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from control_plane.domain.tunnels import Admission, Verdict, cloud_service, judge, refusal, service_socket
from control_plane.services.ports import Clock
from edge_agent.protocol.topics import validate_device_id

log = logging.getLogger(__name__)


class AdmissionStore(Protocol):
    def admissions(self, device_ids: Iterable[str]) -> dict[str, Admission]: ...


@dataclass(frozen=True)
class TunnelPolicy:
    """What settings say: the services a device may expose, the cloud services devices may reach, the run dir."""

    run_dir: Path
    services: frozenset[str]
    cloud_services: Mapping[str, tuple[str, int]]
    rotation_grace: timedelta


class TunnelAccessService:
    def __init__(self, store: AdmissionStore, policy: TunnelPolicy, clock: Clock) -> None:
        self._store = store
        self._policy = policy
        self._clock = clock
        self._rotated_since: dict[str, datetime] = {}

    @property
    def in_grace(self) -> frozenset[str]:
        """Devices whose open tunnel authenticated with a key since rotated away, waiting for the new key."""
        return frozenset(self._rotated_since)

    def admit(self, device_id: str, public_key: str) -> str | None:
        try:
            validate_device_id(device_id)
        except ValueError as exc:
            return str(exc)
        why = refusal(self._store.admissions([device_id]).get(device_id), public_key)
        return None if why is None else why.value

    def recheck(self, open_keys: Mapping[str, str]) -> dict[str, str]:
        now = self._clock()
        admissions = self._store.admissions(open_keys)
        closing: dict[str, str] = {}
        for device_id, key in open_keys.items():
            judgement = judge(
                admissions.get(device_id), key, self._rotated_since.get(device_id), now, self._policy.rotation_grace
            )
            if judgement.verdict is Verdict.GRACE:
                if device_id not in self._rotated_since:
                    log.info("%s rotated its key; its open tunnel stays until it reconnects", device_id)
                self._rotated_since.setdefault(device_id, now)
                continue
            self._rotated_since.pop(device_id, None)
            if judgement.verdict is Verdict.CLOSE:
                closing[device_id] = judgement.reason
        for gone in set(self._rotated_since) - set(open_keys):
            del self._rotated_since[gone]
        return closing

    def socket_for(self, device_id: str, service: str) -> Path | None:
        if service not in self._policy.services:
            return None
        return service_socket(self._policy.run_dir, device_id, service)

    def cloud_address(self, service: str, port: int) -> tuple[str, int] | None:
        del port  # the name alone decides (control_plane.domain.tunnels.cloud_service)
        return cloud_service(dict(self._policy.cloud_services), service)
