"""Device access: broker credentials issued and revoked, and the broker's accounts kept equal to the control plane's.

A device's broker access is an account here (issued when and by whom, or revoked when) and a client of the broker
(`BrokerAccounts`). The broker holds the control plane's own client and exactly the devices the fleet knows whose
account is active: provisioning and revoking keep it so, and `reconcile` restores it (at each connection to the
broker, and on demand) after anything changed behind the control plane's back. Revoking a device deletes its broker
client (the broker disconnects it at once) and revokes its device tokens.

Passwords are made here, handed out once, and never stored or logged. One change to the broker's accounts runs at a
time, so a reconcile never undoes a provisioning that runs beside it.
"""

from __future__ import annotations

import logging
import secrets
import threading
from dataclasses import dataclass
from datetime import datetime

from control_plane.domain.broker_identity import (
    NOT_ADMINISTERED,
    BrokerAdmin,
    BrokerCredential,
    ReconcileReport,
    Revocation,
)
from control_plane.domain.errors import Conflict, NotFound, ServiceError, Unavailable
from control_plane.services.fleet import FleetService
from control_plane.services.identity import IdentityService
from control_plane.services.ports import BrokerAccounts, BrokerAccountStore, Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReconcileOutcome:
    """The latest reconcile: when, what it changed, or why it failed."""

    at: datetime
    report: ReconcileReport | None
    error: str | None = None


class DeviceAccessService:
    def __init__(
        self,
        broker: BrokerAccounts,
        accounts: BrokerAccountStore,
        fleet: FleetService,
        identity: IdentityService,
        clock: Clock,
    ) -> None:
        self._broker = broker
        self._accounts = accounts
        self._fleet = fleet
        self._identity = identity
        self._clock = clock
        self._changing = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._worker: threading.Thread | None = None
        self.last_reconcile: ReconcileOutcome | None = None

    @property
    def admin(self) -> BrokerAdmin:
        return self._broker.admin

    def describe(self) -> str:
        """One line for the start log: who administers the broker's accounts."""
        if self.admin is BrokerAdmin.DYNSEC:
            return (
                "broker accounts: administered through Mosquitto's dynamic-security plugin (mqtt.admin: dynsec); "
                "one client per device, pinned to its id; revocation disconnects at once"
            )
        return (
            "broker accounts: NOT administered by this control plane (mqtt.admin: none); devices log in with what the "
            "broker's own configuration holds, and revoking a device does not reach the broker"
        )

    # -- credentials ------------------------------------------------------------------------------------------
    def issue_credentials(self, device_id: str, issued_by: str) -> BrokerCredential:
        """New broker credentials for an enrolled device (replacing any it had: its session is disconnected)."""
        self._fleet.get_device(device_id)
        if self.admin is BrokerAdmin.NONE:
            raise Conflict(NOT_ADMINISTERED)
        password = secrets.token_urlsafe(32)
        self.provision(device_id, password, issued_by)
        log.info("issued broker credentials for device %s (by %s)", device_id, issued_by)
        return BrokerCredential(device_id, username=device_id, client_id=device_id, password=password)

    def provisioning(self) -> BrokerProvisioning | None:
        """The seam enrollment hands a device's new broker password through (and retires it through): the account
        is recorded here and the broker told. None when the broker is not administered here."""
        return None if self.admin is BrokerAdmin.NONE else BrokerProvisioning(self)

    def provision(self, device_id: str, password: str, issued_by: str) -> None:
        """Give the broker `password` for the device, and record its account active."""
        with self._changing:
            self._broker.provision(device_id, password)
            self._accounts.issue(device_id, issued_by, self._clock())

    def revoke_broker(self, device_id: str) -> None:
        """Record the device's account revoked and delete its broker client (its tokens are left alone)."""
        with self._changing:
            self._accounts.revoke(device_id, self._clock())
            self._broker.revoke(device_id)

    def revoke(self, device_id: str) -> Revocation:
        """Revoke everything the device holds: its broker account (recorded first, so no reconcile brings it back),
        its device tokens, then its broker client. `Unavailable` when the broker could not be told; the rest is
        done, and the next reconcile deletes the client."""
        if not self._known(device_id):
            raise NotFound(f"device {device_id!r} is not known")
        return self._revoke(device_id)

    def forget(self, device_id: str, released: bool = False) -> None:
        """Forget the device (refused while an unfinished rollout holds it, unless `released`: the rollouts no
        longer wait for it) and revoke what it holds."""
        if released:
            self._fleet.forget_released(device_id)
        else:
            self._fleet.forget(device_id)
        self._revoke(device_id)

    def _revoke(self, device_id: str) -> Revocation:
        with self._changing:
            self._accounts.revoke(device_id, self._clock())
            tokens = [t for t in self._identity.list_tokens() if t.device_id == device_id and t.revoked_at is None]
            for token in tokens:
                self._identity.revoke(token.id)
            try:
                self._broker.revoke(device_id)
            except Unavailable as exc:
                raise Unavailable(
                    f"device {device_id!r}: account and {len(tokens)} token(s) revoked, but the broker was not told "
                    f"({exc}); its client is deleted at the next reconcile"
                ) from exc
        log.warning("revoked device %s: broker (%s), %d device token(s)", device_id, self.admin.value, len(tokens))
        return Revocation(device_id, self.admin, tuple(t.id for t in tokens))

    def _known(self, device_id: str) -> bool:
        """In the fleet, or ever given broker access, or holding a device token."""
        try:
            self._fleet.get_device(device_id)
        except NotFound:
            return self._accounts.get(device_id) is not None or any(
                t.device_id == device_id for t in self._identity.list_tokens()
            )
        return True

    # -- reconcile --------------------------------------------------------------------------------------------
    def reconcile(self) -> ReconcileReport:
        """Make the broker's clients equal the control plane's own and those of the known devices whose account
        is active."""
        try:
            with self._changing:
                known = {view.device.id for view in self._fleet.list_devices()}
                report = self._broker.reconcile(sorted(self._accounts.active_ids() & known))
        except ServiceError as exc:
            self.last_reconcile = ReconcileOutcome(self._clock(), None, str(exc))
            raise
        self.last_reconcile = ReconcileOutcome(self._clock(), report)
        if report.changed:
            log.warning("broker accounts reconciled: %s", _summary(report))
        if report.without_password:
            log.warning(
                "the broker had lost %d device client(s); they were created without a password: issue new "
                "credentials for %s",
                len(report.without_password),
                ", ".join(report.without_password),
            )
        return report

    def reconcile_soon(self) -> None:
        """Ask the background worker to reconcile (the MQTT link calls this from its network thread on connect)."""
        self._wake.set()

    def start(self) -> None:
        if self.admin is BrokerAdmin.NONE or self._worker is not None:
            return
        self._stopping.clear()
        self._worker = threading.Thread(target=self._work, name="broker-reconcile", daemon=True)
        self._worker.start()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        if self._worker is not None:
            self._worker.join(timeout=10)
            self._worker = None

    def _work(self) -> None:
        while True:
            self._wake.wait()
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                self.reconcile()
            except ServiceError as exc:
                log.warning("broker accounts: reconcile failed: %s", exc)
            except Exception:
                log.exception("broker accounts: reconcile failed")


class BrokerProvisioning:
    """`provision` / `revoke` of one device's broker access, for enrollment (services/enrollment.py)."""

    def __init__(self, access: DeviceAccessService) -> None:
        self._access = access

    def provision(self, device_id: str, password: str) -> None:
        self._access.provision(device_id, password, issued_by="enrollment")

    def revoke(self, device_id: str) -> None:
        self._access.revoke_broker(device_id)


def _summary(report: ReconcileReport) -> str:
    parts = [
        f"{label} {', '.join(names)}"
        for label, names in (
            ("created", report.created),
            ("updated", report.updated),
            ("deleted", report.deleted),
            ("roles created", report.roles_created),
            ("roles updated", report.roles_updated),
            ("roles deleted", report.roles_deleted),
        )
        if names
    ]
    if report.default_access_set:
        parts.append("default access set to deny")
    if report.own_client_updated:
        parts.append("own client pinned")
    return "; ".join(parts)
