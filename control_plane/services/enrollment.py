"""Device enrollment: enrollment tokens, a device's request for its identity, approval, denial, key rotation.

A device proves it holds the key it names (the request is signed by it) and, to be enrolled, presents an
enrollment token (or, to rotate its key, its own device token and a signature by its current key). What each
request gets is decided by `control_plane.domain.enrollment.decide`; this module does the I/O around it.
Credentials are minted when they are handed out and never stored in clear: the broker password goes to the broker
(`BrokerProvisioning`), the artifact credential is a device token whose digest `IdentityService` keeps.
Labels, channel and GPU class come from the token's presets or the operator, never from the device.
This module never logs a secret and never approves a key without a proof.
"""

from __future__ import annotations

import logging
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Protocol

from control_plane.domain.enrollment import (
    RETRY_AFTER_S,
    Decision,
    DeviceEnrollment,
    EnrollmentRequest,
    EnrollmentToken,
    Outcome,
    Proofs,
    clock_skew_refusal,
    decide,
    derived_device_id,
    key_fingerprint,
    placement,
)
from control_plane.domain.errors import Conflict, Forbidden, InvalidInput, NotFound, Unauthenticated
from control_plane.domain.fleet import ControlPlaneStep, DeviceEventRecord, EventSource
from control_plane.domain.identity import Principal, Role
from control_plane.services.identity import NEEDS_TOKEN, IdentityService, digest
from control_plane.services.ports import Clock, FleetStore
from edge_agent.protocol import HardwareFacts, SignatureError, Verifier
from edge_agent.protocol.enrollment import (
    ENROLLMENT_TOKEN_PREFIX,
    DeviceIdentity,
    EnrollAnswer,
    EnrollmentStatus,
    EnrollRequest,
)
from edge_agent.protocol.topics import validate_device_id
from edge_agent.protocol.tunnel import TunnelEndpoint
from edge_agent.protocol.vocabulary import Channel

log = logging.getLogger(__name__)

ENROLLMENT_SUBJECT = "enrollment-token:"


class EnrollmentStore(Protocol):
    def add_token(self, token: EnrollmentToken) -> EnrollmentToken: ...
    def token_by_digest(self, digest: str) -> EnrollmentToken | None: ...
    def get_token(self, token_id: str) -> EnrollmentToken | None: ...
    def list_tokens(self) -> list[EnrollmentToken]: ...
    def revoke_token(self, token_id: str, at: datetime) -> None: ...
    def use_token(self, token_id: str) -> bool: ...
    def get(self, device_id: str) -> DeviceEnrollment | None: ...
    def save(self, enrollment: DeviceEnrollment) -> DeviceEnrollment: ...
    def list(self, status: EnrollmentStatus | None = None) -> list[DeviceEnrollment]: ...
    def remove(self, device_id: str) -> None: ...


class BrokerProvisioning(Protocol):
    """The seam to the broker's per-device accounts (Mosquitto's dynamic-security plugin: issue 9, item 6).
    Any object with these two methods fits, e.g. the `BrokerAccounts` adapter. Without one, the password an
    approved device receives must be given to the broker by whoever runs it (docs/security.md)."""

    def provision(self, device_id: str, password: str) -> None: ...
    def revoke(self, device_id: str) -> None: ...


@dataclass(frozen=True)
class IdentityPolicy:
    """What goes into every identity besides the secrets: where devices reach the broker, the topic prefix, the
    key they pin, and how long a pending device is told to wait."""

    control_plane_public_key: str
    mqtt_host: str | None = None
    mqtt_port: int | None = None
    topic_prefix: str = "edge"
    retry_after_s: float = RETRY_AFTER_S
    broker_ca_pem: str | None = None  # what the control plane verifies the broker with: the device needs the same
    tunnel: TunnelEndpoint | None = None  # the tunnel gateway and its host key, for agents that accept it


class EnrollmentService:
    def __init__(
        self,
        store: EnrollmentStore,
        fleet: FleetStore,
        tokens: IdentityService,
        policy: IdentityPolicy,
        clock: Clock,
        broker: BrokerProvisioning | None = None,
    ) -> None:
        self._store = store
        self._fleet = fleet
        self._tokens = tokens
        self._policy = policy
        self._clock = clock
        self._broker = broker

    def now(self) -> datetime:
        return self._clock()

    # -- enrollment tokens ------------------------------------------------------------------------------------
    def create_token(
        self,
        name: str,
        created_by: str,
        expires_at: datetime | None = None,
        max_uses: int | None = None,
        labels: Mapping[str, str] | None = None,
        channel: Channel | None = None,
        gpu_class: str | None = None,
        auto_approve: bool = False,
    ) -> tuple[EnrollmentToken, str]:
        """A new enrollment token and its secret (shown once)."""
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at: must be in the future")
        secret = ENROLLMENT_TOKEN_PREFIX + secrets.token_urlsafe(32)
        token = EnrollmentToken(
            id=uuid.uuid4().hex[:16],
            name=name,
            digest=digest(secret),
            created_at=now,
            created_by=created_by,
            expires_at=expires_at,
            max_uses=max_uses,
            uses=0,
            revoked_at=None,
            auto_approve=auto_approve,
            labels=dict(labels or {}),
            channel=channel,
            gpu_class=gpu_class,
        )
        return self._store.add_token(token), secret

    def list_tokens(self) -> list[EnrollmentToken]:
        return self._store.list_tokens()

    def revoke_token(self, token_id: str) -> EnrollmentToken:
        """Revoke: no new enrollment with it, and its pending requests are refused from now on."""
        token = self._store.get_token(token_id)
        if token is None:
            raise NotFound(f"no enrollment token {token_id!r}")
        if token.revoked_at is None:
            now = self._clock()
            self._store.revoke_token(token_id, now)
            token = replace(token, revoked_at=now)
        return token

    # -- who is asking ----------------------------------------------------------------------------------------
    def authenticate(self, authorization: str | None) -> Principal:
        """The caller of `POST /v1/enroll`: an enrollment token that exists and is not revoked (expiry and uses
        are the decision's: a pending request may still be asked about), or a device's own token."""
        credential = _credential(authorization)
        if not credential.startswith(ENROLLMENT_TOKEN_PREFIX):
            principal = self._tokens.authenticate(authorization)
            if principal.role is not Role.DEVICE:
                raise Forbidden("only an enrollment token, or a device's own token (key rotation), may enroll")
            return principal
        token = self._store.token_by_digest(digest(credential))
        if token is None:
            raise Unauthenticated("unknown enrollment token")
        if token.revoked_at is not None:
            raise Unauthenticated("enrollment token revoked")
        return Principal(subject=ENROLLMENT_SUBJECT + token.id, name=f"enrollment token {token.name}", role=Role.DEVICE)

    # -- a device asks ----------------------------------------------------------------------------------------
    def enroll(self, caller: Principal, request: EnrollRequest, with_tunnel: bool = False) -> EnrollAnswer:
        """`with_tunnel`: the agent accepts the tunnel gateway in its identity (an older agent would refuse it)."""
        now = self._clock()
        try:
            Verifier(request.public_key).verify(request.signed_bytes(), request.signature)
        except SignatureError as exc:
            raise Unauthenticated("the request is not signed by the key it names") from exc
        skew = clock_skew_refusal(request.at, now)
        if skew is not None:
            raise Unauthenticated(skew)
        device_id = request.device_id or derived_device_id(request.public_key)
        record = self._store.get(device_id)
        token = None
        if caller.subject.startswith(ENROLLMENT_SUBJECT):
            token = self._store.get_token(caller.subject.removeprefix(ENROLLMENT_SUBJECT))
        proofs = Proofs(token, caller.device_id, _signed_by_current_key(record, request))
        known = self._fleet.get_device(device_id) is not None
        decision = decide(device_id, request.public_key, record, known, proofs, now)
        if decision.outcome is Outcome.REFUSED:
            raise Unauthenticated(decision.reason)
        if decision.outcome is Outcome.DENIED:
            return EnrollAnswer(status=EnrollmentStatus.DENIED, device_id=device_id, message=decision.reason)
        if decision.new_request:
            record = self._new_request(device_id, record, request, token, decision, now)
        if decision.outcome is Outcome.PENDING:
            return EnrollAnswer(
                status=EnrollmentStatus.PENDING,
                device_id=device_id,
                message=decision.reason,
                retry_after_s=self._policy.retry_after_s,
            )
        if decision.approve:
            assert record is not None  # a rotation has an approved record; a new request was just saved
            by = caller.subject if decision.rotation else f"enrollment token {token.name if token else '?'}"
            record = self._approve(record, request.public_key, request.hardware, token, by, now, decision.rotation)
        assert record is not None
        identity = self._issue(record, now, with_tunnel)
        return EnrollAnswer(
            status=EnrollmentStatus.APPROVED, device_id=device_id, message=decision.reason, identity=identity
        )

    def _new_request(
        self,
        device_id: str,
        record: DeviceEnrollment | None,
        request: EnrollRequest,
        token: EnrollmentToken | None,
        decision: Decision,
        now: datetime,
    ) -> DeviceEnrollment:
        try:
            validate_device_id(device_id)
        except ValueError as exc:
            raise InvalidInput(f"device_id: {exc}") from exc
        if token is not None and not self._store.use_token(token.id):
            raise Unauthenticated("enrollment token used up")
        pending = EnrollmentRequest(
            public_key=request.public_key,
            token_id=token.id if token is not None else None,
            hardware=request.hardware,
            status=EnrollmentStatus.PENDING,
            requested_at=now,
        )
        base = record or DeviceEnrollment(device_id=device_id, public_key=None, request=None)
        saved = self._store.save(replace(base, request=pending))
        if decision.outcome is Outcome.PENDING:
            by = f" with enrollment token {token.name}" if token is not None else ""
            self._event(
                device_id,
                ControlPlaneStep.ENROLLMENT_REQUESTED,
                f"key {key_fingerprint(request.public_key)} asks to enroll{by}: {decision.reason}",
                now,
            )
            log.info("enrollment of %s is pending: %s", device_id, decision.reason)
        return saved

    # -- operators decide -------------------------------------------------------------------------------------
    def approve(self, device_id: str, by: Principal) -> DeviceEnrollment:
        record = self._pending(device_id)
        assert record.request is not None
        token = self._store.get_token(record.request.token_id) if record.request.token_id else None
        return self._approve(record, record.request.public_key, record.request.hardware, token, by.name, self._clock())

    def deny(self, device_id: str, by: Principal, reason: str | None = None) -> DeviceEnrollment:
        record = self._pending(device_id)
        assert record.request is not None
        now = self._clock()
        denied = replace(
            record.request, status=EnrollmentStatus.DENIED, decided_at=now, decided_by=by.name, reason=reason
        )
        saved = self._store.save(replace(record, request=denied))
        detail = f"key {key_fingerprint(denied.public_key)} denied by {by.name}" + (f": {reason}" if reason else "")
        self._event(device_id, ControlPlaneStep.ENROLLMENT_DENIED, detail, now)
        log.warning("enrollment of %s denied by %s", device_id, by.name)
        return saved

    def list_enrollments(self, status: EnrollmentStatus | None = None) -> list[DeviceEnrollment]:
        return self._store.list(status)

    def token_names(self) -> dict[str, str]:
        return {t.id: t.name for t in self._store.list_tokens()}

    def forget(self, device_id: str) -> None:
        """The device was forgotten: its key, its artifact credential and its broker account go with it."""
        record = self._store.get(device_id)
        if record is None:
            return
        self._retire_credentials(record)
        self._store.remove(device_id)

    def _pending(self, device_id: str) -> DeviceEnrollment:
        record = self._store.get(device_id)
        if record is None or record.request is None:
            raise NotFound(f"no enrollment request from {device_id!r}")
        if record.status is not EnrollmentStatus.PENDING or record.request.status is not EnrollmentStatus.PENDING:
            raise Conflict(f"the enrollment request of {device_id} is {record.status.value}, not pending")
        return record

    def _approve(
        self,
        record: DeviceEnrollment,
        key: str,
        hardware: HardwareFacts,
        token: EnrollmentToken | None,
        by: str,
        now: datetime,
        rotation: bool = False,
    ) -> DeviceEnrollment:
        """`key` becomes the device's identity. The device (its history included) stays; the credentials of a
        key it replaces stop working now."""
        if record.public_key is not None and record.public_key != key:
            self._retire_credentials(record)
            record = replace(record, artifact_token_id=None)
        existing = self._fleet.get_device(record.device_id)
        if not rotation:
            where = placement(
                token,
                hardware,
                existing.channel if existing else None,
                existing.labels if existing else None,
                existing.gpu_class if existing else None,
            )
            self._fleet.enroll(
                record.device_id,
                where.channel,
                where.labels,
                where.gpu_class,
                hardware,
                existing.ansible if existing else None,
                now,
            )
        request = record.request
        if request is None or request.public_key != key:
            request = EnrollmentRequest(key, None, hardware, EnrollmentStatus.PENDING, now)
        approved = replace(request, status=EnrollmentStatus.APPROVED, decided_at=now, decided_by=by)
        saved = self._store.save(replace(record, public_key=key, approved_at=now, request=approved))
        step = ControlPlaneStep.KEY_ROTATED if rotation else ControlPlaneStep.ENROLLED
        self._event(record.device_id, step, f"key {key_fingerprint(key)} approved ({by})", now)
        log.info("%s: key %s approved (%s)", record.device_id, key_fingerprint(key), by)
        return saved

    def _issue(self, record: DeviceEnrollment, now: datetime, with_tunnel: bool = False) -> DeviceIdentity:
        """Mint the credentials of an approved key; the previous artifact credential stops working."""
        password = secrets.token_urlsafe(24)
        if self._broker is not None:
            self._broker.provision(record.device_id, password)
        else:
            log.warning(
                "%s: no broker accounts are configured; give the broker this device's password yourself "
                "(docs/security.md)",
                record.device_id,
            )
        if record.artifact_token_id is not None:
            self._revoke_token_quietly(record.artifact_token_id)
        token, secret = self._tokens.create_token(
            f"device-{record.device_id}"[:128],
            Role.DEVICE,
            f"enrollment:{record.device_id}",
            device_id=record.device_id,
        )
        self._store.save(replace(record, artifact_token_id=token.id))
        p = self._policy
        return DeviceIdentity(
            device_id=record.device_id,
            mqtt_username=record.device_id,
            mqtt_password=password,
            mqtt_host=p.mqtt_host,
            mqtt_port=p.mqtt_port,
            topic_prefix=p.topic_prefix,
            control_plane_public_key=p.control_plane_public_key,
            control_plane_token=secret,
            broker_ca_pem=p.broker_ca_pem,
            tunnel=p.tunnel if with_tunnel else None,
        )

    def _retire_credentials(self, record: DeviceEnrollment) -> None:
        if record.artifact_token_id is not None:
            self._revoke_token_quietly(record.artifact_token_id)
        if self._broker is not None:
            self._broker.revoke(record.device_id)

    def _revoke_token_quietly(self, token_id: str) -> None:
        try:
            self._tokens.revoke(token_id)
        except NotFound:
            log.warning("the artifact token %s of a device was gone already", token_id)

    def _event(self, device_id: str, step: ControlPlaneStep, reason: str, now: datetime) -> None:
        event = DeviceEventRecord(device_id, 0, step.value, None, None, reason, now, EventSource.CONTROL_PLANE)
        self._fleet.add_event(event, now)  # a device not in the fleet yet (pending) has no history to add to


def _signed_by_current_key(record: DeviceEnrollment | None, request: EnrollRequest) -> bool:
    if record is None or record.public_key is None or request.previous_signature is None:
        return False
    try:
        Verifier(record.public_key).verify(request.signed_bytes(), request.previous_signature)
    except SignatureError:
        return False
    return True


def _credential(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated(NEEDS_TOKEN)
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential or len(credential) > 512:
        raise Unauthenticated("expected 'Authorization: Bearer TOKEN'")
    return credential
