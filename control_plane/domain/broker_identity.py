"""Per-device broker identity: what the broker's accounts must be, and the changes that make them so.

The control plane administers Mosquitto through its dynamic-security plugin (docs/security.md, "Broker identity").
Each device is one broker client whose user name is its id, pinned to client id = its id, holding one role of its
own that allows only its own topics in the directions the wire contract needs; the control plane is one client
pinned to its configured client id with a role over the whole topic prefix and the plugin's control topics.
Default access is deny for everything.

Pure values and decisions: `wanted_state` says what the broker must hold, `plan_reconcile` compares that with what
the broker holds and returns the changes as values. No I/O, no clock reads; this module never sees a password.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from control_plane.domain.errors import Conflict
from edge_agent.protocol import Topics
from edge_agent.protocol.topics import validate_device_id


class BrokerAdmin(str, Enum):
    """Who administers the broker's accounts."""

    NONE = "none"  # the broker's own configuration (a password file, the demo's embedded broker)
    DYNSEC = "dynsec"  # this control plane, through Mosquitto's dynamic-security plugin


NOT_ADMINISTERED = (
    "this control plane does not administer the broker (mqtt.admin: none): give the device its broker credential "
    "in the broker's own configuration, or run Mosquitto with the dynamic-security plugin and set mqtt.admin: dynsec"
)


class BrokerRefused(Conflict):
    """The broker's administration refused a command; the text names the command, its subject and the reason the
    plugin gave (e.g. "broker refused createClient for dev-1: Role not found")."""

    def __init__(self, command: str, subject: str, reason: str) -> None:
        super().__init__(f"broker refused {command} for {subject}: {reason}")
        self.command, self.subject, self.reason = command, subject, reason


class AclType(str, Enum):
    PUBLISH_SEND = "publishClientSend"  # the client publishes
    PUBLISH_RECEIVE = "publishClientReceive"  # the broker delivers to the client
    SUBSCRIBE_LITERAL = "subscribeLiteral"
    SUBSCRIBE_PATTERN = "subscribePattern"
    UNSUBSCRIBE_LITERAL = "unsubscribeLiteral"
    UNSUBSCRIBE_PATTERN = "unsubscribePattern"


@dataclass(frozen=True, order=True)
class Acl:
    acltype: AclType
    topic: str
    allow: bool = True


@dataclass(frozen=True)
class BrokerRole:
    name: str
    acls: frozenset[Acl]


@dataclass(frozen=True)
class BrokerClient:
    """A broker account as wanted or as found. The password is never part of it: the broker keeps only its hash."""

    username: str
    clientid: str | None
    roles: frozenset[str]
    groups: frozenset[str] = frozenset()
    disabled: bool = False


# The plugin's default for each kind of access when no role decides; the control plane wants deny everywhere.
DEFAULT_ACCESS: Mapping[str, bool] = {
    "publishClientSend": False,
    "publishClientReceive": False,
    "subscribe": False,
    "unsubscribe": False,
}


@dataclass(frozen=True)
class BrokerState:
    """The broker's accounts: clients and roles by name, and the default access."""

    clients: Mapping[str, BrokerClient]
    roles: Mapping[str, BrokerRole]
    default_access: Mapping[str, bool] = field(default_factory=lambda: dict(DEFAULT_ACCESS))


CONTROL_PLANE_ROLE = "edge-control-plane"
DEVICE_ROLE_PREFIX = "edge-device:"
DYNSEC_TOPICS = "$CONTROL/dynamic-security/#"


def device_role_name(device_id: str) -> str:
    return DEVICE_ROLE_PREFIX + device_id


def is_managed_role(name: str) -> bool:
    """Roles this control plane owns (and deletes when no longer wanted); any other role is left alone."""
    return name == CONTROL_PLANE_ROLE or name.startswith(DEVICE_ROLE_PREFIX)


def device_role(device_id: str, topics: Topics) -> BrokerRole:
    """Only the device's own topics, in the wire contract's directions (DESIGN.md, the topic table): it publishes
    reported, events, telemetry and status (also its last will), and subscribes to and receives desired."""
    sends = (topics.reported, topics.events, topics.telemetry, topics.status)
    desired = topics.desired(device_id)
    acls = {Acl(AclType.PUBLISH_SEND, topic(device_id)) for topic in sends} | {
        Acl(AclType.SUBSCRIBE_LITERAL, desired),
        Acl(AclType.PUBLISH_RECEIVE, desired),
        Acl(AclType.UNSUBSCRIBE_LITERAL, desired),
    }
    return BrokerRole(device_role_name(device_id), frozenset(acls))


def control_plane_role(topics: Topics) -> BrokerRole:
    """Everything under the topic prefix (also as a shared subscription), and the plugin's control topics."""
    everything = f"{topics.prefix}/#"
    acls = {
        Acl(AclType.PUBLISH_SEND, everything),
        Acl(AclType.PUBLISH_RECEIVE, everything),
        Acl(AclType.SUBSCRIBE_PATTERN, everything),
        Acl(AclType.SUBSCRIBE_PATTERN, f"$share/+/{everything}"),
        Acl(AclType.UNSUBSCRIBE_PATTERN, everything),
        Acl(AclType.UNSUBSCRIBE_PATTERN, f"$share/+/{everything}"),
        Acl(AclType.PUBLISH_SEND, DYNSEC_TOPICS),
        Acl(AclType.PUBLISH_RECEIVE, DYNSEC_TOPICS),
        Acl(AclType.SUBSCRIBE_PATTERN, DYNSEC_TOPICS),
        Acl(AclType.UNSUBSCRIBE_PATTERN, DYNSEC_TOPICS),
    }
    return BrokerRole(CONTROL_PLANE_ROLE, frozenset(acls))


def device_client(device_id: str) -> BrokerClient:
    return BrokerClient(device_id, device_id, frozenset({device_role_name(device_id)}))


def control_plane_client(username: str, client_id: str) -> BrokerClient:
    return BrokerClient(username, client_id, frozenset({CONTROL_PLANE_ROLE}))


def reserved_refusal(device_id: str, own: BrokerClient, keep: Collection[str] = ()) -> str | None:
    """Why `device_id` may not have a broker client, or None. A device named like the control plane's user or
    client id would replace the control plane's account, or be pinned to its client id and knock it off the
    broker; a device named like a kept client would take that client over."""
    try:
        validate_device_id(device_id)
    except ValueError as exc:
        return str(exc)
    if device_id == own.username:
        return f"device id {device_id!r} is the control plane's own MQTT user name"
    if device_id == own.clientid:
        return f"device id {device_id!r} is the control plane's MQTT client id"
    if device_id in keep:
        return f"device id {device_id!r} is a broker client the control plane leaves alone (mqtt.admin_keep_clients)"
    return None


def wanted_state(device_ids: Collection[str], own: BrokerClient, topics: Topics) -> BrokerState:
    """The control plane's client and one client and role per device in `device_ids`."""
    clients = {own.username: own} | {d: device_client(d) for d in device_ids}
    roles = {CONTROL_PLANE_ROLE: control_plane_role(topics)}
    roles |= {device_role_name(d): device_role(d, topics) for d in device_ids}
    return BrokerState(clients, roles)


# -- changes, as values ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetDefaultAccess:
    access: Mapping[str, bool]


@dataclass(frozen=True)
class CreateRole:
    role: BrokerRole


@dataclass(frozen=True)
class SetRoleAcls:
    role: BrokerRole


@dataclass(frozen=True)
class DeleteRole:
    name: str


@dataclass(frozen=True)
class CreateClient:
    """Created without a password: nobody can log in as it until credentials are issued for it."""

    client: BrokerClient


@dataclass(frozen=True)
class UpdateClient:
    """Client id, roles and groups as wanted, and enabled; the broker disconnects the client's sessions."""

    client: BrokerClient


@dataclass(frozen=True)
class DeleteClient:
    username: str


BrokerChange = SetDefaultAccess | CreateRole | SetRoleAcls | DeleteRole | CreateClient | UpdateClient | DeleteClient


@dataclass(frozen=True)
class ReconcilePlan:
    """`changes` in the order to apply them (roles before the clients that hold them, clients deleted before their
    roles); `own_update` last of all: the broker disconnects the control plane when its own client changes."""

    changes: tuple[BrokerChange, ...]
    own_update: UpdateClient | None = None

    @property
    def empty(self) -> bool:
        return not self.changes and self.own_update is None


def plan_reconcile(
    wanted: BrokerState, found: BrokerState, own_username: str, keep: Collection[str] = ()
) -> ReconcilePlan:
    """The changes that make the broker's accounts equal `wanted`.

    Clients not wanted are deleted unless named in `keep` (a bridge, a break-glass admin); roles not wanted are
    deleted only when this control plane owns them (`is_managed_role`). Passwords are never compared or set here.
    """
    changes: list[BrokerChange] = []
    if dict(found.default_access) != dict(wanted.default_access):
        changes.append(SetDefaultAccess(wanted.default_access))
    for name, role in sorted(wanted.roles.items()):
        present = found.roles.get(name)
        if present is None:
            changes.append(CreateRole(role))
        elif present.acls != role.acls:
            changes.append(SetRoleAcls(role))
    own_update: UpdateClient | None = None
    for username, client in sorted(wanted.clients.items()):
        present_client = found.clients.get(username)
        if present_client is None:
            if username != own_username:  # the control plane cannot create the account it is logged in as
                changes.append(CreateClient(client))
        elif present_client != client:
            if username == own_username:
                own_update = UpdateClient(client)
            else:
                changes.append(UpdateClient(client))
    gone = set(found.clients) - set(wanted.clients) - set(keep) - {own_username}
    changes.extend(DeleteClient(username) for username in sorted(gone))
    stale_roles = {name for name in found.roles if is_managed_role(name)} - set(wanted.roles)
    changes.extend(DeleteRole(name) for name in sorted(stale_roles))
    return ReconcilePlan(tuple(changes), own_update)


@dataclass(frozen=True)
class ReconcileReport:
    """What one reconcile changed. `without_password`: device clients it had to create, which nobody can log in as
    until new credentials are issued for them (the broker had lost them)."""

    administered: bool
    created: tuple[str, ...] = ()
    updated: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    roles_created: tuple[str, ...] = ()
    roles_updated: tuple[str, ...] = ()
    roles_deleted: tuple[str, ...] = ()
    default_access_set: bool = False
    own_client_updated: bool = False

    @property
    def without_password(self) -> tuple[str, ...]:
        return self.created

    @property
    def changed(self) -> bool:
        return any(
            (
                self.created,
                self.updated,
                self.deleted,
                self.roles_created,
                self.roles_updated,
                self.roles_deleted,
                self.default_access_set,
                self.own_client_updated,
            )
        )


def report_of(plan: ReconcilePlan, administered: bool = True) -> ReconcileReport:
    """The report of applying `plan` in full."""
    c = plan.changes
    return ReconcileReport(
        administered=administered,
        created=tuple(x.client.username for x in c if isinstance(x, CreateClient)),
        updated=tuple(x.client.username for x in c if isinstance(x, UpdateClient)),
        deleted=tuple(x.username for x in c if isinstance(x, DeleteClient)),
        roles_created=tuple(x.role.name for x in c if isinstance(x, CreateRole)),
        roles_updated=tuple(x.role.name for x in c if isinstance(x, SetRoleAcls)),
        roles_deleted=tuple(x.name for x in c if isinstance(x, DeleteRole)),
        default_access_set=any(isinstance(x, SetDefaultAccess) for x in c),
        own_client_updated=plan.own_update is not None,
    )


@dataclass(frozen=True)
class BrokerAccount:
    """The control plane's record of a device's broker access: issued (and by whom), or revoked. The broker holds
    exactly the devices whose account is active (and the control plane's own client)."""

    device_id: str
    active: bool
    issued_at: datetime | None
    issued_by: str | None
    revoked_at: datetime | None


@dataclass(frozen=True)
class BrokerCredential:
    """A device's broker login, handed out once when issued; the password is never stored, shown again or logged."""

    device_id: str
    username: str
    client_id: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Revocation:
    """What revoking a device did: its broker client deleted (`broker` dynsec; `none`: the broker was not told) and
    the device tokens it held revoked."""

    device_id: str
    broker: BrokerAdmin
    tokens_revoked: tuple[str, ...]
