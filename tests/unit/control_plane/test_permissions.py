"""Every REST operation declares who may call it, in one table (control_plane/api/permissions.py).

These tests read the app's own routes: a route added without an entry fails here, and so does an entry whose
route is gone. They also pin the role table an operator relies on (docs/security.md).
"""

from __future__ import annotations

import pytest
from fastapi.routing import APIRoute, APIWebSocketRoute

from control_plane.api.app import create_app
from control_plane.api.permissions import PERMISSIONS, WEBSOCKET, Access, requirement
from control_plane.domain.identity import ROLE_PERMISSIONS, Permission, Principal, Role
from control_plane.settings import ServerSettings

WRITES = frozenset(
    {
        Permission.REGISTRY_WRITE,
        Permission.FLEET_WRITE,
        Permission.ROLLOUT_WRITE,
        Permission.TRAINING_WRITE,
        Permission.PLAYBOOK_WRITE,
        Permission.BUILDER_ADMIN,
        Permission.TOKEN_ADMIN,
        Permission.BUILD_WORK,
        Permission.TUNNEL_USE,  # a request through a tunnel may change anything on the device
    }
)


def app_operations() -> set[tuple[str, str]]:
    """(METHOD, path template) of every API route (WEBSOCKET for a WebSocket route), walking included routers."""
    app = create_app(ServerSettings())
    found: set[tuple[str, str]] = set()

    def walk(routes: list[object]) -> None:
        for route in routes:
            inner = getattr(route, "original_router", None)
            if inner is not None:
                walk(list(inner.routes))
            elif isinstance(route, APIRoute):
                found.update((method, route.path) for method in route.methods)
            elif isinstance(route, APIWebSocketRoute):
                found.add((WEBSOCKET, route.path))

    walk(list(app.routes))
    return found


def test_every_route_declares_a_permission() -> None:
    missing = sorted(op for op in app_operations() if requirement(*op) is None)
    assert missing == [], f"routes without an entry in control_plane/api/permissions.py: {missing}"


def test_no_entry_names_a_route_that_does_not_exist() -> None:
    stale = sorted(set(PERMISSIONS) - app_operations())
    assert stale == [], f"entries in control_plane/api/permissions.py without a route: {stale}"


def test_only_health_and_the_signing_key_are_anonymous() -> None:
    anonymous = sorted(op for op, needed in PERMISSIONS.items() if needed is Access.ANONYMOUS)
    assert anonymous == [("GET", "/healthz"), ("GET", "/v1/keys/signing")]


def test_nothing_that_changes_state_is_a_read() -> None:
    """Every operation other than GET needs a permission that changes something (never READ, never anonymous);
    the one exception is a device enrolling, which needs an enrollment token or its own device token."""
    loose = sorted(
        op
        for op, needed in PERMISSIONS.items()
        if op[0] != "GET" and (isinstance(needed, Access) or needed not in WRITES)
    )
    assert loose == [("POST", "/v1/enroll")]
    assert [op for op, needed in PERMISSIONS.items() if needed is Access.ENROLLMENT] == [("POST", "/v1/enroll")]


def test_the_openapi_document_declares_the_bearer_scheme_on_each_operation() -> None:
    schema = create_app(ServerSettings()).openapi()
    assert schema["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": schema["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            anonymous = requirement(method, path) is Access.ANONYMOUS
            assert operation["security"] == ([] if anonymous else [{"bearer": []}]), (method, path)


@pytest.mark.parametrize(
    ("role", "held"),
    [
        pytest.param(
            Role.VIEWER, {Permission.READ, Permission.ARTIFACT_READ, Permission.METRICS_READ}, id="viewer-reads-only"
        ),
        pytest.param(Role.BUILDER, {Permission.BUILD_WORK, Permission.ARTIFACT_READ}, id="builder-builds-only"),
        pytest.param(Role.DEVICE, {Permission.ARTIFACT_READ}, id="device-downloads-only"),
        pytest.param(Role.METRICS, {Permission.METRICS_READ}, id="prometheus-scrapes-only"),
    ],
)
def test_machine_and_read_only_roles_hold_nothing_more(role: Role, held: set[Permission]) -> None:
    assert ROLE_PERMISSIONS[role] == held


def test_operators_change_the_fleet_but_not_identities_or_builds_in_flight() -> None:
    operator = Principal("token:o", "op", Role.OPERATOR)
    assert operator.may(Permission.ROLLOUT_WRITE) and operator.may(Permission.PLAYBOOK_WRITE)
    for withheld in (Permission.TOKEN_ADMIN, Permission.BUILDER_ADMIN, Permission.AUDIT_READ, Permission.BUILD_WORK):
        assert not operator.may(withheld)


def test_an_admin_holds_everything_but_the_builders_own_work() -> None:
    admin = Principal("token:a", "root", Role.ADMIN)
    assert {p for p in Permission if admin.may(p)} == set(Permission) - {Permission.BUILD_WORK}
