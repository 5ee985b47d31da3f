"""Who may call what: every REST operation's permission, in one table beside the routes.

`authorize` (control_plane/api/auth.py) looks each request's route up here; an operation missing from the table
is refused (fail closed), and tests/unit/control_plane/test_permissions.py fails on any route of the app without
an entry. Only health and the signing public key are anonymous: an agent must be able to pin the key, and a load
balancer to probe health, before either holds a credential. `AUTHENTICATED` is for "who am I": any valid identity.
`ENROLLMENT` is for `POST /v1/enroll` alone: an enrollment token, or a device's own token (to rotate its key),
authenticated by `EnrollmentService.authenticate` before the (small) body is read. A WebSocket route's "method" in
the table is `WEBSOCKET`.
"""

from __future__ import annotations

from enum import Enum

from control_plane.domain.identity import Permission


class Access(str, Enum):
    ANONYMOUS = "anonymous"
    AUTHENTICATED = "authenticated"
    ENROLLMENT = "enrollment"


Requirement = Permission | Access

R = Permission.READ
WEBSOCKET = "WEBSOCKET"  # the table's "method" of a WebSocket route
SERVICE_PROXY = "/v1/devices/{device_id}/services/{service}/{path:path}"
PROXIED_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")

PERMISSIONS: dict[tuple[str, str], Requirement] = {
    # system
    ("GET", "/healthz"): Access.ANONYMOUS,
    ("GET", "/v1/status"): R,
    ("GET", "/v1/keys/signing"): Access.ANONYMOUS,
    ("GET", "/v1/whoami"): Access.AUTHENTICATED,
    ("GET", "/v1/targets"): R,
    ("GET", "/v1/artifacts/{sha256}"): Permission.ARTIFACT_READ,
    ("GET", "/metrics"): Permission.METRICS_READ,  # Prometheus, with a `metrics` token (docs/operations.md)
    # identity
    ("POST", "/v1/tokens"): Permission.TOKEN_ADMIN,
    ("GET", "/v1/tokens"): Permission.TOKEN_ADMIN,
    ("POST", "/v1/tokens/{token_id}/revoke"): Permission.TOKEN_ADMIN,
    # models and versions
    ("GET", "/v1/models"): R,
    ("GET", "/v1/models/{name}"): R,
    ("POST", "/v1/models/{name}/versions"): Permission.REGISTRY_WRITE,
    ("DELETE", "/v1/models/{name}"): Permission.REGISTRY_WRITE,
    ("DELETE", "/v1/models/{name}/versions/{version}"): Permission.REGISTRY_WRITE,
    ("GET", "/v1/models/{name}/versions"): R,
    ("GET", "/v1/models/{name}/versions/{version}"): R,
    ("GET", "/v1/models/{name}/versions/{version}/samples"): R,
    ("POST", "/v1/models/{name}/versions/{version}/calibration"): Permission.REGISTRY_WRITE,
    # builds
    ("POST", "/v1/models/{name}/versions/{version}/builds"): Permission.REGISTRY_WRITE,
    ("GET", "/v1/models/{name}/versions/{version}/builds"): R,
    ("GET", "/v1/builds/{build_id}"): R,
    ("GET", "/v1/builds/{build_id}/logs"): R,
    ("POST", "/v1/builds/{build_id}/cancel"): Permission.REGISTRY_WRITE,
    # the builder protocol
    ("POST", "/v1/builders/claim"): Permission.BUILD_WORK,
    ("POST", "/v1/builds/{build_id}/heartbeat"): Permission.BUILD_WORK,
    ("POST", "/v1/builds/{build_id}/complete"): Permission.BUILD_WORK,
    ("POST", "/v1/builds/{build_id}/fail"): Permission.BUILD_WORK,
    ("GET", "/v1/builders"): R,
    ("POST", "/v1/builders"): Permission.BUILDER_ADMIN,
    # fleet
    ("GET", "/v1/devices"): R,
    ("GET", "/v1/devices/{device_id}"): R,
    ("GET", "/v1/devices/{device_id}/events"): R,
    ("GET", "/v1/label-keys"): R,
    ("PUT", "/v1/devices/{device_id}/enrollment"): Permission.FLEET_WRITE,
    ("DELETE", "/v1/devices/{device_id}"): Permission.FLEET_WRITE,
    ("PUT", "/v1/devices/{device_id}/labels"): Permission.FLEET_WRITE,
    # enrollment: operators hand out enrollment tokens and decide on requests; devices ask with a token
    ("POST", "/v1/enrollment-tokens"): Permission.FLEET_WRITE,
    ("GET", "/v1/enrollment-tokens"): Permission.FLEET_WRITE,
    ("POST", "/v1/enrollment-tokens/{token_id}/revoke"): Permission.FLEET_WRITE,
    ("GET", "/v1/enrollments"): R,
    ("POST", "/v1/devices/{device_id}/approve"): Permission.FLEET_WRITE,
    ("POST", "/v1/devices/{device_id}/deny"): Permission.FLEET_WRITE,
    ("POST", "/v1/enroll"): Access.ENROLLMENT,
    # broker access (docs/security.md, Broker identity)
    ("POST", "/v1/devices/{device_id}/broker-credentials"): Permission.FLEET_WRITE,
    ("POST", "/v1/devices/{device_id}/revoke"): Permission.FLEET_WRITE,
    ("GET", "/v1/broker"): R,
    ("POST", "/v1/broker/reconcile"): Permission.FLEET_WRITE,
    # rollouts
    ("POST", "/v1/rollouts"): Permission.ROLLOUT_WRITE,
    ("GET", "/v1/rollouts"): R,
    ("GET", "/v1/rollouts/{rollout_id}"): R,
    ("POST", "/v1/rollouts/{rollout_id}/{command}"): Permission.ROLLOUT_WRITE,
    ("GET", "/v1/rollouts/{rollout_id}/events"): R,
    # training
    ("POST", "/v1/training/jobs"): Permission.TRAINING_WRITE,
    ("GET", "/v1/training/jobs"): R,
    ("GET", "/v1/training/jobs/{job_id}"): R,
    # playbook runs
    ("POST", "/v1/playbook-runs"): Permission.PLAYBOOK_WRITE,
    ("GET", "/v1/playbook-runs"): R,
    ("GET", "/v1/playbook-runs/{run_id}"): R,
    ("POST", "/v1/playbook-runs/{run_id}/cancel"): Permission.PLAYBOOK_WRITE,
    ("GET", "/v1/playbook-runs/{run_id}/events"): R,
    # audit
    ("GET", "/v1/audit"): Permission.AUDIT_READ,
    # tunnels (docs/tunnels.md): a device's service, by HTTP or as a raw TCP stream, and the sessions they open
    **{(method, SERVICE_PROXY): Permission.TUNNEL_USE for method in PROXIED_METHODS},
    (WEBSOCKET, "/v1/devices/{device_id}/tunnel/{service}"): Permission.TUNNEL_USE,
    ("GET", "/v1/tunnel-sessions"): Permission.TUNNEL_USE,
    ("GET", "/v1/tunnel-sessions/{session_id}"): Permission.TUNNEL_USE,
    ("POST", "/v1/tunnel-sessions/{session_id}/close"): Permission.TUNNEL_USE,
}


def requirement(method: str, path: str) -> Requirement | None:
    """The table's entry for an operation, or None when it has none (callers refuse it). `path` is the route's
    template; the OpenAPI document's form of it (`{path}` for Starlette's `{path:path}`) is found too."""
    key = (method.upper(), path)
    return PERMISSIONS.get(key) or _BY_OPENAPI_PATH.get(key)


_BY_OPENAPI_PATH = {(method, path.replace(":path}", "}")): needed for (method, path), needed in PERMISSIONS.items()}
