"""Who may do what: roles, the permissions each role holds, and the principal a request acts as.

Pure values and decisions: no I/O, no clock reads. Authentication (turning a bearer token or a JWT into a
`Principal`) lives in `control_plane.services.identity`; which route needs which permission is the table in
`control_plane.api.permissions`. This module must never grant a permission by default: a role not in
`ROLE_PERMISSIONS` holds nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Any


class Role(str, Enum):
    VIEWER = "viewer"  # reads everything an operator sees; changes nothing
    OPERATOR = "operator"  # uploads, builds, rollouts, devices, playbook runs, training, tunnels to devices
    ADMIN = "admin"  # everything, including tokens, builders and the audit log
    BUILDER = "builder"  # a build worker: claims builds and delivers their artifacts, nothing else
    DEVICE = "device"  # an edge device: downloads the artifacts it was sent, nothing else
    METRICS = "metrics"  # a Prometheus server: scrapes /metrics, nothing else


class Permission(str, Enum):
    READ = "read"  # models, builds, devices, rollouts, runs, jobs and their event streams
    ARTIFACT_READ = "artifact:read"  # download a content-addressed artifact
    REGISTRY_WRITE = "registry:write"  # upload versions and calibration sets, request builds
    FLEET_WRITE = "fleet:write"  # enroll, forget devices
    ROLLOUT_WRITE = "rollout:write"  # start, pause, resume, abort, roll back
    TRAINING_WRITE = "training:write"  # submit training jobs
    PLAYBOOK_WRITE = "playbook:write"  # start and cancel playbook runs
    BUILD_WORK = "build:work"  # claim, heartbeat, complete, fail builds (builders only)
    BUILDER_ADMIN = "builder:admin"  # register builders, cancel builds of others
    TOKEN_ADMIN = "token:admin"  # noqa: S105 (a permission's name, not a secret) - create, list, revoke tokens
    AUDIT_READ = "audit:read"  # read and verify the audit log
    METRICS_READ = "metrics:read"  # scrape /metrics (aggregate figures: no device ids, no secrets)
    TUNNEL_USE = "tunnel:use"  # reach devices' services through their tunnels; list and close tunnel sessions


_OPERATOR = frozenset(
    {
        Permission.READ,
        Permission.ARTIFACT_READ,
        Permission.METRICS_READ,
        Permission.REGISTRY_WRITE,
        Permission.FLEET_WRITE,
        Permission.ROLLOUT_WRITE,
        Permission.TRAINING_WRITE,
        Permission.PLAYBOOK_WRITE,
        Permission.TUNNEL_USE,
    }
)

ROLE_PERMISSIONS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: frozenset({Permission.READ, Permission.ARTIFACT_READ, Permission.METRICS_READ}),
    Role.OPERATOR: _OPERATOR,
    # An admin does not build: a lease belongs to a builder identity, and an admin token leaking into a build
    # worker would make every build it delivers look vouched for by an administrator.
    Role.ADMIN: _OPERATOR | {Permission.BUILDER_ADMIN, Permission.TOKEN_ADMIN, Permission.AUDIT_READ},
    Role.BUILDER: frozenset({Permission.BUILD_WORK, Permission.ARTIFACT_READ}),
    Role.DEVICE: frozenset({Permission.ARTIFACT_READ}),
    Role.METRICS: frozenset({Permission.METRICS_READ}),
}


@dataclass(frozen=True)
class Principal:
    """The identity a request acts as. `subject` is stable and unique: `token:<id>` for a bearer token,
    `oidc:<issuer sub>` for a single-sign-on user; it is what the audit log and a build's lease record."""

    subject: str
    name: str
    role: Role
    device_id: str | None = None  # a DEVICE principal's own device

    def may(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS.get(self.role, frozenset())


@dataclass(frozen=True)
class ApiToken:
    """A stored token: only its digest is kept; the secret is shown once, when it is created."""

    id: str
    name: str
    role: Role
    digest: str
    created_at: datetime
    created_by: str
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    device_id: str | None = None

    def refusal(self, now: datetime) -> str | None:
        """Why this token may not be used at `now`, or None when it may."""
        if self.revoked_at is not None:
            return "token revoked"
        if self.expires_at is not None and now >= self.expires_at:
            return "token expired"
        return None

    def principal(self) -> Principal:
        return Principal(subject=f"token:{self.id}", name=self.name, role=self.role, device_id=self.device_id)


# Single sign-on maps people to these roles only: builders and devices are machines with tokens of their own.
HUMAN_ROLES = (Role.ADMIN, Role.OPERATOR, Role.VIEWER)  # strongest first


def role_from_claims(claims: Mapping[str, Any], claim: str, role_map: Mapping[str, Role]) -> Role | None:
    """The strongest role any value of the `claim` (a string or a list of strings) is mapped to, or None."""
    raw = claims.get(claim)
    values = [raw] if isinstance(raw, str) else raw if isinstance(raw, list) else []
    granted = {role_map[v] for v in values if isinstance(v, str) and v in role_map}
    return next((role for role in HUMAN_ROLES if role in granted), None)
