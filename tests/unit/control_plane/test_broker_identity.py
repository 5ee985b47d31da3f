"""The broker's accounts as the control plane wants them, and the changes that make the broker's equal (pure)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from control_plane.domain.broker_identity import (
    CONTROL_PLANE_ROLE,
    DEFAULT_ACCESS,
    Acl,
    AclType,
    BrokerClient,
    BrokerRole,
    BrokerState,
    CreateClient,
    CreateRole,
    DeleteClient,
    DeleteRole,
    SetDefaultAccess,
    SetRoleAcls,
    UpdateClient,
    control_plane_client,
    device_client,
    device_role,
    device_role_name,
    plan_reconcile,
    report_of,
    reserved_refusal,
    wanted_state,
)
from edge_agent.protocol import Topics

TOPICS = Topics("edge")
OWN = control_plane_client("controlplane", "edge-control-plane")
ADMIN_ROLE = BrokerRole("admin", frozenset({Acl(AclType.PUBLISH_SEND, "$CONTROL/dynamic-security/#")}))


def broker(*devices: str, own: BrokerClient = OWN, extra_clients: tuple[BrokerClient, ...] = ()) -> BrokerState:
    """A broker already equal to what is wanted for `devices`, plus `extra_clients`."""
    wanted = wanted_state(devices, own, TOPICS)
    return BrokerState({**wanted.clients, **{c.username: c for c in extra_clients}}, dict(wanted.roles))


def with_client(state: BrokerState, client: BrokerClient) -> BrokerState:
    return BrokerState({**state.clients, client.username: client}, state.roles, state.default_access)


def with_role(state: BrokerState, role: BrokerRole) -> BrokerState:
    return BrokerState(state.clients, {**state.roles, role.name: role}, state.default_access)


def without_client(state: BrokerState, username: str) -> BrokerState:
    return BrokerState({k: v for k, v in state.clients.items() if k != username}, state.roles, state.default_access)


def without_role(state: BrokerState, name: str) -> BrokerState:
    return BrokerState(state.clients, {k: v for k, v in state.roles.items() if k != name}, state.default_access)


INTRUDER = BrokerClient("intruder", None, frozenset())
FRESH_BROKER = BrokerState(
    {"controlplane": BrokerClient("controlplane", None, frozenset({"admin"}))},
    {"admin": ADMIN_ROLE},
    {"publishClientSend": False, "publishClientReceive": True, "subscribe": False, "unsubscribe": True},
)


@pytest.mark.parametrize(
    ("devices", "found", "keep", "changes", "own_update"),
    [
        pytest.param(("dev-a",), broker("dev-a"), (), [], False, id="equal-nothing-to-do"),
        pytest.param(
            ("dev-a",),
            FRESH_BROKER,
            (),
            [
                SetDefaultAccess(DEFAULT_ACCESS),
                CreateRole(wanted_state((), OWN, TOPICS).roles[CONTROL_PLANE_ROLE]),
                CreateRole(device_role("dev-a", TOPICS)),
                CreateClient(device_client("dev-a")),
            ],
            True,
            id="freshly-initialised-plugin",
        ),
        pytest.param(
            ("dev-a", "dev-b"),
            without_role(without_client(broker("dev-a", "dev-b"), "dev-b"), device_role_name("dev-b")),
            (),
            [CreateRole(device_role("dev-b", TOPICS)), CreateClient(device_client("dev-b"))],
            False,
            id="device-lost-by-the-broker",
        ),
        pytest.param(
            ("dev-a",),
            broker("dev-a", "dev-b"),
            (),
            [DeleteClient("dev-b"), DeleteRole(device_role_name("dev-b"))],
            False,
            id="revoked-device-still-there",
        ),
        pytest.param(
            ("dev-a",),
            broker("dev-a", extra_clients=(INTRUDER,)),
            (),
            [DeleteClient("intruder")],
            False,
            id="client-created-behind-its-back",
        ),
        pytest.param(
            ("dev-a",),
            broker("dev-a", extra_clients=(INTRUDER,)),
            ("intruder",),
            [],
            False,
            id="kept-client-left-alone",
        ),
        pytest.param(
            ("dev-a",),
            with_role(broker("dev-a"), ADMIN_ROLE),
            (),
            [],
            False,
            id="foreign-role-left-alone",
        ),
        pytest.param(
            ("dev-a",),
            with_client(broker("dev-a"), replace(device_client("dev-a"), clientid=None)),
            (),
            [UpdateClient(device_client("dev-a"))],
            False,
            id="client-id-unpinned",
        ),
        pytest.param(
            ("dev-a",),
            with_client(broker("dev-a"), replace(device_client("dev-a"), roles=frozenset({"admin"}))),
            (),
            [UpdateClient(device_client("dev-a"))],
            False,
            id="role-swapped",
        ),
        pytest.param(
            ("dev-a",),
            with_client(broker("dev-a"), replace(device_client("dev-a"), groups=frozenset({"everyone"}))),
            (),
            [UpdateClient(device_client("dev-a"))],
            False,
            id="put-in-a-group",
        ),
        pytest.param(
            ("dev-a",),
            with_client(broker("dev-a"), replace(device_client("dev-a"), disabled=True)),
            (),
            [UpdateClient(device_client("dev-a"))],
            False,
            id="disabled",
        ),
        pytest.param(
            ("dev-a",),
            with_role(
                broker("dev-a"),
                BrokerRole(
                    device_role_name("dev-a"),
                    device_role("dev-a", TOPICS).acls | {Acl(AclType.SUBSCRIBE_PATTERN, "edge/#")},
                ),
            ),
            (),
            [SetRoleAcls(device_role("dev-a", TOPICS))],
            False,
            id="role-widened",
        ),
        pytest.param(
            (),
            with_client(broker(), replace(OWN, clientid=None)),
            (),
            [],
            True,
            id="own-client-unpinned",
        ),
        pytest.param(
            (),
            BrokerState(broker().clients, broker().roles, {**DEFAULT_ACCESS, "subscribe": True}),
            (),
            [SetDefaultAccess(DEFAULT_ACCESS)],
            False,
            id="default-access-opened",
        ),
    ],
)
def test_reconcile_plans_the_changes_that_make_the_broker_equal(
    devices: tuple[str, ...], found: BrokerState, keep: tuple[str, ...], changes: list[object], own_update: bool
) -> None:
    plan = plan_reconcile(wanted_state(devices, OWN, TOPICS), found, OWN.username, keep)
    assert list(plan.changes) == changes
    assert (plan.own_update is not None) is own_update
    if own_update:
        assert plan.own_update == UpdateClient(OWN)  # last, apart: the broker disconnects the control plane for it


def test_roles_are_created_before_clients_hold_them_and_deleted_after_their_clients() -> None:
    found = broker("old-1", "old-2")
    plan = plan_reconcile(wanted_state(("new-1",), OWN, TOPICS), found, OWN.username)
    kinds = [type(c).__name__ for c in plan.changes]
    assert kinds == ["CreateRole", "CreateClient", "DeleteClient", "DeleteClient", "DeleteRole", "DeleteRole"]
    report = report_of(plan)
    assert report.created == ("new-1",) and report.without_password == ("new-1",)
    assert report.deleted == ("old-1", "old-2")
    assert report.roles_deleted == (device_role_name("old-1"), device_role_name("old-2"))


def test_applying_the_plan_leaves_nothing_to_do() -> None:
    """Whatever the broker held, the state the plan leads to plans no further change."""
    found = with_client(
        broker("dev-a", "gone", extra_clients=(INTRUDER,)), replace(device_client("dev-a"), clientid=None)
    )
    wanted = wanted_state(("dev-a", "dev-new"), OWN, TOPICS)
    assert not plan_reconcile(wanted, found, OWN.username).empty
    after = BrokerState(dict(wanted.clients), dict(wanted.roles))
    assert plan_reconcile(wanted, after, OWN.username).empty


def test_a_device_role_allows_only_its_own_topics_in_the_contracts_directions() -> None:
    role = device_role("dev-a", TOPICS)
    sends = {a.topic for a in role.acls if a.acltype is AclType.PUBLISH_SEND}
    receives = {a.topic for a in role.acls if a.acltype in (AclType.PUBLISH_RECEIVE, AclType.SUBSCRIBE_LITERAL)}
    assert sends == {f"edge/devices/dev-a/{leaf}" for leaf in ("reported", "events", "telemetry", "status")}
    assert receives == {"edge/devices/dev-a/desired"}
    assert all(a.allow for a in role.acls)
    assert not any("+" in a.topic or "#" in a.topic for a in role.acls)  # no wildcard: nobody else's topics


def test_a_device_is_pinned_to_its_own_client_id() -> None:
    assert device_client("dev-a") == BrokerClient("dev-a", "dev-a", frozenset({"edge-device:dev-a"}))


@pytest.mark.parametrize(
    ("device_id", "refused"),
    [
        pytest.param("dev-a", None, id="ordinary"),
        pytest.param("controlplane", "own MQTT user name", id="the-control-planes-user"),
        pytest.param("edge-control-plane", "MQTT client id", id="the-control-planes-client-id"),
        pytest.param("bridge", "leaves alone", id="a-kept-client"),
        pytest.param("dev/+", "must be", id="not-a-device-id"),
    ],
)
def test_no_device_may_take_the_control_planes_or_a_kept_clients_name(device_id: str, refused: str | None) -> None:
    refusal = reserved_refusal(device_id, OWN, keep=("bridge",))
    assert (refusal is None) if refused is None else (refusal is not None and refused in refusal)
