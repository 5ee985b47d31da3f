"""The broker's accounts: Mosquitto's dynamic-security plugin administered over MQTT, or nobody.

`DynsecAccounts` publishes the plugin's JSON commands on `$CONTROL/dynamic-security/v1` through the control plane's
own MQTT link (its client is the plugin's admin) and reads the answers on `$CONTROL/dynamic-security/v1/response`,
matched by correlation data: several commands per message, every answer checked, a refusal raised with the plugin's
own reason (`BrokerRefused`), no answer within the timeout raised as `Unavailable`. What the accounts must be is
decided in `control_plane.domain.broker_identity`; this module only translates to and from the plugin's JSON.
It must never log or keep a password.

`UnadministeredBroker` stands for a broker this control plane does not administer (the demo's embedded broker, a
Mosquitto with a password file): it provisions nothing and says so.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from control_plane.domain.broker_identity import (
    NOT_ADMINISTERED,
    Acl,
    AclType,
    BrokerAdmin,
    BrokerChange,
    BrokerClient,
    BrokerRefused,
    BrokerRole,
    BrokerState,
    CreateClient,
    CreateRole,
    DeleteClient,
    DeleteRole,
    ReconcileReport,
    SetDefaultAccess,
    SetRoleAcls,
    UpdateClient,
    control_plane_client,
    device_client,
    device_role,
    plan_reconcile,
    report_of,
    reserved_refusal,
    wanted_state,
)
from control_plane.domain.errors import Conflict, InvalidInput, Unavailable
from edge_agent.protocol import Topics

log = logging.getLogger(__name__)

COMMAND_TOPIC = "$CONTROL/dynamic-security/v1"
RESPONSE_TOPIC = f"{COMMAND_TOPIC}/response"
BATCH = 100  # commands per message: the plugin answers them in one message, in order


class ControlChannel(Protocol):
    """What the plugin is reached through: the control plane's MQTT link (`control_plane.adapters.mqtt.MqttLink`)."""

    @property
    def connected(self) -> bool: ...
    def publish(self, topic: str, payload: bytes, retain: bool = True, qos: int = 1) -> bool: ...


@dataclass(frozen=True)
class _Command:
    body: Mapping[str, Any]
    subject: str  # what it is about, for the error text
    tolerated: frozenset[str] = frozenset()  # errors that mean "already so"


@dataclass
class _Waiting:
    ids: frozenset[str]
    answers: dict[str, Mapping[str, Any]] = field(default_factory=dict)
    done: threading.Event = field(default_factory=threading.Event)


class DynsecAccounts:
    """Per-device broker clients in Mosquitto's dynamic-security plugin (docs/security.md, "Broker identity")."""

    admin = BrokerAdmin.DYNSEC

    def __init__(
        self,
        channel: ControlChannel,
        topics: Topics,
        username: str,
        client_id: str,
        timeout_s: float,
        keep: Collection[str] = (),
    ) -> None:
        self._channel = channel
        self._topics = topics
        self._own = control_plane_client(username, client_id)
        self._timeout_s = timeout_s
        self._keep = frozenset(keep)
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiting] = {}
        self._own_update_sent = False

    # -- the port ---------------------------------------------------------------------------------------------
    def provision(self, device_id: str, password: str) -> None:
        """Create or replace the device's role and client (pinned to client id = device id) with this password;
        a session it already had is disconnected. One message, idempotent."""
        self._refuse_reserved(device_id)
        role, client = device_role(device_id, self._topics), device_client(device_id)
        client_fields = {**_client_json(client), "password": password}
        self._run(
            [
                _Command({"command": "createRole", **_role_json(role)}, role.name, frozenset({"Role already exists"})),
                _Command({"command": "modifyRole", **_role_json(role)}, role.name),
                _Command({"command": "createClient", **client_fields}, device_id, frozenset({"Client already exists"})),
                _Command({"command": "modifyClient", **client_fields, "groups": []}, device_id),
                _Command({"command": "enableClient", "username": device_id}, device_id),
            ]
        )

    def revoke(self, device_id: str) -> None:
        """Delete the device's client (the broker disconnects its sessions at once) and its role."""
        self._refuse_reserved(device_id)
        role = device_role(device_id, self._topics)
        self._run(
            [
                _Command(
                    {"command": "deleteClient", "username": device_id}, device_id, frozenset({"Client not found"})
                ),
                _Command({"command": "deleteRole", "rolename": role.name}, role.name, frozenset({"Role not found"})),
            ]
        )

    def reconcile(self, device_ids: Collection[str]) -> ReconcileReport:
        """Make the plugin's clients and roles equal to the control plane's own client and `device_ids`."""
        found = self.observe()
        if self._own.username not in found.clients:
            raise BrokerRefused(
                "reconcile",
                self._own.username,
                "the control plane's MQTT user is not a client of the dynamic-security plugin; initialise the plugin "
                "with `mosquitto_ctrl dynsec init FILE USER` and give that user as mqtt.username",
            )
        devices = [d for d in device_ids if self._reserved(d) is None]
        wanted = wanted_state(devices, self._own, self._topics)
        plan = plan_reconcile(wanted, found, self._own.username, self._keep)
        self._run([_command_of(change) for change in plan.changes])
        report = report_of(plan)
        if plan.own_update is not None:
            report = self._update_own(plan.own_update.client, report)
        return report

    # -- reading the plugin's state -----------------------------------------------------------------------------
    def observe(self) -> BrokerState:
        """The plugin's default access, clients and roles."""
        access, clients, roles = self._run(
            [
                _Command({"command": "getDefaultACLAccess"}, "the default access"),
                _Command({"command": "listClients", "verbose": True, "count": -1, "offset": 0}, "the client list"),
                _Command({"command": "listRoles", "verbose": True, "count": -1, "offset": 0}, "the role list"),
            ]
        )
        return BrokerState(
            clients={c.username: c for c in map(_client_of, _data_list(clients, "clients"))},
            roles={r.name: r for r in map(_role_of, _data_list(roles, "roles"))},
            default_access={
                str(a.get("acltype")): bool(a.get("allow")) for a in _data_list(access, "acls") if isinstance(a, dict)
            },
        )

    # -- answers ----------------------------------------------------------------------------------------------
    def on_response(self, _topic: str, payload: bytes) -> None:
        """The plugin's answers (from the MQTT network thread): hand each to the command waiting for it."""
        try:
            document = json.loads(payload)
        except ValueError:
            log.warning("dynamic-security: an answer that is not JSON was ignored")
            return
        responses = document.get("responses") if isinstance(document, dict) else None
        for answer in responses if isinstance(responses, list) else ():
            correlation = answer.get("correlationData") if isinstance(answer, dict) else None
            if not isinstance(correlation, str):
                continue
            with self._lock:
                waiting = self._waiting.get(correlation)
                if waiting is None:
                    continue  # another control plane's, or one whose caller stopped waiting
                waiting.answers[correlation] = answer
                if len(waiting.answers) == len(waiting.ids):
                    waiting.done.set()

    def _run(self, commands: Sequence[_Command]) -> list[Mapping[str, Any]]:
        answers: list[Mapping[str, Any]] = []
        for start in range(0, len(commands), BATCH):
            answers.extend(self._send(commands[start : start + BATCH]))
        return answers

    def _send(self, batch: Sequence[_Command]) -> list[Mapping[str, Any]]:
        if not self._channel.connected:
            raise Unavailable("not connected to the broker: its accounts cannot be changed now")
        ids = [uuid.uuid4().hex for _ in batch]
        waiting = _Waiting(frozenset(ids))
        with self._lock:
            self._waiting.update(dict.fromkeys(ids, waiting))
        try:
            payload = {"commands": [{**c.body, "correlationData": i} for c, i in zip(batch, ids, strict=True)]}
            if not self._channel.publish(COMMAND_TOPIC, json.dumps(payload).encode(), retain=False, qos=1):
                raise Unavailable("not connected to the broker: its accounts cannot be changed now")
            if not waiting.done.wait(self._timeout_s):
                raise Unavailable(
                    f"the broker's dynamic-security plugin did not answer {len(batch) - len(waiting.answers)} of "
                    f"{len(batch)} command(s) within {self._timeout_s:g} s (is the plugin loaded, and mqtt.username "
                    "its admin?)"
                )
        finally:
            with self._lock:
                for i in ids:
                    self._waiting.pop(i, None)
        answers = [waiting.answers[i] for i in ids]
        for command, answer in zip(batch, answers, strict=True):
            error = answer.get("error")
            if error is not None and str(error) not in command.tolerated:
                raise BrokerRefused(str(command.body.get("command")), command.subject, str(error))
        return answers

    # -- the control plane's own client ---------------------------------------------------------------------------
    def _update_own(self, own: BrokerClient, report: ReconcileReport) -> ReconcileReport:
        """Pin the control plane's own client (and give it its role). The broker disconnects it for that, before
        it can answer, so the command is sent last, at most once per process, and checked by the reconcile that
        follows the reconnection."""
        if self._own_update_sent:
            log.error(
                "dynamic-security: the control plane's own client %s is still not as wanted (client id %s, role %s) "
                "after updating it; leaving it as it is",
                own.username,
                own.clientid,
                ", ".join(sorted(own.roles)),
            )
            return replace(report, own_client_updated=False)
        self._own_update_sent = True
        log.warning(
            "dynamic-security: pinning the control plane's own client %s to client id %s with role %s; the broker "
            "disconnects this control plane once for that and it reconnects",
            own.username,
            own.clientid,
            ", ".join(sorted(own.roles)),
        )
        body = {"command": "modifyClient", **_client_json(own), "groups": [], "correlationData": "own-client"}
        # QoS 0: the broker disconnects us before it acknowledges, and a QoS 1 resend would disconnect us again.
        self._channel.publish(COMMAND_TOPIC, json.dumps({"commands": [body]}).encode(), retain=False, qos=0)
        return report

    def _reserved(self, device_id: str) -> str | None:
        return reserved_refusal(device_id, self._own, self._keep)

    def _refuse_reserved(self, device_id: str) -> None:
        refusal = self._reserved(device_id)
        if refusal is not None:
            raise InvalidInput(refusal)


class UnadministeredBroker:
    """A broker whose accounts this control plane does not administer (mqtt.admin: none)."""

    admin = BrokerAdmin.NONE

    def provision(self, device_id: str, password: str) -> None:
        raise Conflict(NOT_ADMINISTERED)

    def revoke(self, device_id: str) -> None:
        """Nothing to do here: the caller reports that the broker was not told."""

    def reconcile(self, device_ids: Collection[str]) -> ReconcileReport:
        return ReconcileReport(administered=False)


# -- JSON of the plugin -----------------------------------------------------------------------------------------


def _role_json(role: BrokerRole) -> dict[str, Any]:
    acls = [{"acltype": a.acltype.value, "topic": a.topic, "allow": a.allow, "priority": 0} for a in sorted(role.acls)]
    return {"rolename": role.name, "acls": acls}


def _client_json(client: BrokerClient) -> dict[str, Any]:
    return {
        "username": client.username,
        "clientid": client.clientid or "",
        "roles": [{"rolename": name} for name in sorted(client.roles)],
    }


def _command_of(change: BrokerChange) -> _Command:
    if isinstance(change, SetDefaultAccess):
        acls = [{"acltype": kind, "allow": allow} for kind, allow in sorted(change.access.items())]
        return _Command({"command": "setDefaultACLAccess", "acls": acls}, "the default access")
    if isinstance(change, CreateRole):
        return _Command(
            {"command": "createRole", **_role_json(change.role)}, change.role.name, frozenset({"Role already exists"})
        )
    if isinstance(change, SetRoleAcls):
        return _Command({"command": "modifyRole", **_role_json(change.role)}, change.role.name)
    if isinstance(change, DeleteRole):
        return _Command({"command": "deleteRole", "rolename": change.name}, change.name, frozenset({"Role not found"}))
    if isinstance(change, CreateClient):  # no password: nobody logs in as it until credentials are issued
        return _Command(
            {"command": "createClient", **_client_json(change.client)},
            change.client.username,
            frozenset({"Client already exists"}),
        )
    if isinstance(change, UpdateClient):
        return _Command(
            {"command": "modifyClient", **_client_json(change.client), "groups": []}, change.client.username
        )
    assert isinstance(change, DeleteClient)
    return _delete_client(change.username)


def _data_list(answer: Mapping[str, Any], key: str) -> list[Any]:
    data = answer.get("data")
    items = data.get(key) if isinstance(data, dict) else None
    return items if isinstance(items, list) else []


def _delete_client(username: str) -> _Command:
    return _Command({"command": "deleteClient", "username": username}, username, frozenset({"Client not found"}))


def _names(items: Any, key: str) -> frozenset[str]:
    if not isinstance(items, list):
        return frozenset()
    return frozenset(str(i[key]) for i in items if isinstance(i, dict) and key in i)


def _client_of(item: Any) -> BrokerClient:
    entry = item if isinstance(item, dict) else {"username": str(item)}
    clientid = entry.get("clientid")
    return BrokerClient(
        username=str(entry.get("username")),
        clientid=str(clientid) if clientid else None,
        roles=_names(entry.get("roles"), "rolename"),
        groups=_names(entry.get("groups"), "groupname"),
        disabled=bool(entry.get("disabled", False)),
    )


def _role_of(item: Any) -> BrokerRole:
    entry = item if isinstance(item, dict) else {"rolename": str(item)}
    acls: set[Acl] = set()
    for acl in entry.get("acls") or ():
        kinds = {k.value for k in AclType}
        if isinstance(acl, dict) and acl.get("acltype") in kinds:
            acls.add(Acl(AclType(acl["acltype"]), str(acl.get("topic")), bool(acl.get("allow"))))
        else:  # a kind this version does not know: the role cannot equal a wanted one, so it is rewritten
            acls.add(Acl(AclType.PUBLISH_SEND, f"<unknown acl {acl!r}>", False))
    return BrokerRole(str(entry.get("rolename")), frozenset(acls))
