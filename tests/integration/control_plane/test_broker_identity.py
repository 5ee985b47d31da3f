"""Per-device broker identity (docs/security.md, "Broker identity"): a real Mosquitto with the dynamic-security
plugin, administered by a real control plane (mqtt.admin: dynsec), and real MQTT clients logging in as devices.

Every claim is checked by delivery, never by SUBACK: Mosquitto may grant a SUBSCRIBE it will never deliver on,
and drops a PUBLISH a client may not send without telling a 3.1.1 client. Each forbidden message is followed by a
positive control from the same publisher to the same subscriber; once the control has arrived, the forbidden one
would have arrived before it.
"""

from __future__ import annotations

import json
import random
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from control_plane.domain.broker_identity import BrokerAdmin
from edge_agent.protocol import MessageKind, Presence, PresenceStatus, seal
from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.support import (
    ADMIN_HEADERS,
    CONTROL_PLANE_USER,
    EDGECTL,
    OBSERVER_USER,
    DynsecMosquitto,
    dynsec_available,
    mint_token,
    password_for,
    python_env,
    wait_for,
)

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not dynsec_available(), reason="needs Mosquitto's dynamic-security plugin and mosquitto_ctrl"),
]

LEAVES = ("desired", "reported", "events", "telemetry", "status")


# -- MQTT clients ---------------------------------------------------------------------------------------------


@dataclass
class Link:
    """A real MQTT client: how its CONNECT was answered, what it received, when it was disconnected."""

    client: mqtt.Client
    answered: threading.Event = field(default_factory=threading.Event)
    subscribed: threading.Event = field(default_factory=threading.Event)
    connack: ReasonCode | None = None
    received: list[tuple[str, bytes]] = field(default_factory=list)
    disconnected_at: float | None = None

    @property
    def accepted(self) -> bool:
        return self.connack is not None and not self.connack.is_failure

    def got(self, payload: bytes) -> bool:
        return any(p == payload for _, p in self.received)

    def publish(self, topic: str, payload: bytes, qos: int = 1) -> None:
        self.client.publish(topic, payload, qos=qos).wait_for_publish(timeout=10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def connect(broker: DynsecMosquitto, username: str, password: str, client_id: str, *subscribe: str) -> Link:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv311)
    client.username_pw_set(username, password)
    client.reconnect_delay_set(min_delay=5, max_delay=5)
    link = Link(client)

    def on_connect(c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if link.connack is None:
            link.connack = reason
        if not reason.is_failure and subscribe:
            c.subscribe([(topic, 1) for topic in subscribe])
        link.answered.set()

    def on_disconnect(_c: mqtt.Client, _u: object, _f: object, _reason: ReasonCode, _p: object) -> None:
        if link.disconnected_at is None:
            link.disconnected_at = time.monotonic()
        link.answered.set()

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.on_subscribe = lambda *_args: link.subscribed.set()
    client.on_message = lambda _c, _u, message: link.received.append((message.topic, bytes(message.payload)))
    client.connect(broker.host, broker.port)
    client.loop_start()
    assert link.answered.wait(10), f"{username} ({client_id}): no CONNACK"
    if link.accepted and subscribe:
        assert link.subscribed.wait(10), f"{username}: no SUBACK"
    return link


@dataclass
class Observer:
    """The tests' eyes: a client the control plane keeps, receiving everything under edge/ and able to ask the
    plugin what it holds."""

    link: Link
    answers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def dynsec(self, command: dict[str, Any]) -> dict[str, Any]:
        correlation = uuid.uuid4().hex
        body = json.dumps({"commands": [{**command, "correlationData": correlation}]}).encode()
        self.link.publish("$CONTROL/dynamic-security/v1", body)

        def answered() -> dict[str, Any] | None:
            for topic, payload in self.link.received:
                if topic.startswith("$CONTROL/"):
                    for answer in json.loads(payload).get("responses", []):
                        if answer.get("correlationData") == correlation:
                            return dict(answer)
            return None

        return wait_for(answered, timeout=10, what=f"the plugin's answer to {command['command']}")

    def clients(self) -> dict[str, dict[str, Any]]:
        answer = self.dynsec({"command": "listClients", "verbose": True, "count": -1})
        return {c["username"]: c for c in answer["data"]["clients"]}


# -- fixtures -------------------------------------------------------------------------------------------------


@dataclass
class Access:
    """The control plane under test, and which devices the tests gave broker access (the broker must hold exactly
    these, the control plane's own client and the observer)."""

    server: RunningServer
    broker: DynsecMosquitto
    observer: Observer
    active: set[str] = field(default_factory=set)
    links: list[Link] = field(default_factory=list)

    @property
    def api(self) -> httpx.Client:
        return self.server.http

    @property
    def client_id(self) -> str:
        return self.server.settings.mqtt.client_id

    def enroll(self, device_id: str) -> None:
        answer = self.api.put(f"/v1/devices/{device_id}/enrollment", json={"channel": "mqtt"})
        assert answer.status_code == 200, answer.text

    def issue(self, device_id: str) -> str:
        answer = self.api.post(f"/v1/devices/{device_id}/broker-credentials")
        assert answer.status_code == 201, answer.text
        body = answer.json()
        assert (body["username"], body["client_id"]) == (device_id, device_id)
        self.active.add(device_id)
        password: str = body["password"]
        return password

    def revoke(self, device_id: str) -> dict[str, Any]:
        answer = self.api.post(f"/v1/devices/{device_id}/revoke")
        assert answer.status_code == 200, answer.text
        self.active.discard(device_id)
        body: dict[str, Any] = answer.json()
        return body

    def device(self, device_id: str, *subscribe: str) -> tuple[Link, str]:
        """An enrolled device with fresh credentials, connected as itself, subscribed to `subscribe`."""
        self.enroll(device_id)
        password = self.issue(device_id)
        link = self.connect(device_id, password, device_id, *subscribe)
        assert link.accepted, f"{device_id} was refused: {link.connack}"
        return link, password

    def connect(self, username: str, password: str, client_id: str, *subscribe: str) -> Link:
        link = connect(self.broker, username, password, client_id, *subscribe)
        self.links.append(link)
        return link

    def expected_clients(self) -> set[str]:
        return {CONTROL_PLANE_USER, OBSERVER_USER} | self.active


def settled(api: httpx.Client) -> bool:
    """The control plane reconciled and found nothing more to change (its own client pinned already)."""
    answer = api.post("/v1/broker/reconcile")
    return answer.status_code == 200 and not any(v for k, v in answer.json().items() if k != "administered")


@pytest.fixture(scope="module")
def access(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Access]:
    broker = DynsecMosquitto(workdir=Path(tmp_path_factory.mktemp("dynsec-broker")))
    broker.start()
    base = server_settings(broker, tmp_path_factory.mktemp("cp-dynsec"))
    mqtt_settings = base.mqtt.model_copy(update={"admin": BrokerAdmin.DYNSEC, "admin_keep_clients": [OBSERVER_USER]})
    server = start_server(base.model_copy(update={"mqtt": mqtt_settings}))
    observer_link = connect(
        broker,
        OBSERVER_USER,
        password_for(OBSERVER_USER),
        f"observer-{uuid.uuid4().hex[:6]}",
        "edge/#",
        "$CONTROL/dynamic-security/v1/response",
    )
    state = Access(server, broker, Observer(observer_link))
    try:
        wait_for(lambda: settled(server.http), timeout=30, what="the control plane to pin its own client")
        yield state
    finally:
        for link in state.links:
            link.close()
        observer_link.close()
        server.stop()
        broker.stop()


# -- tests ----------------------------------------------------------------------------------------------------


def test_the_control_plane_administers_the_broker_and_pinned_its_own_client(access: Access) -> None:
    assert access.api.get("/v1/broker").json()["admin"] == "dynsec"
    own = access.observer.clients()[CONTROL_PLANE_USER]
    assert own["clientid"] == access.client_id
    assert [r["rolename"] for r in own["roles"]] == ["edge-control-plane"]
    default = access.observer.dynsec({"command": "getDefaultACLAccess"})["data"]["acls"]
    assert {a["acltype"]: a["allow"] for a in default} == {
        "publishClientSend": False,
        "publishClientReceive": False,
        "subscribe": False,
        "unsubscribe": False,
    }


def test_each_device_publishes_and_receives_only_on_its_own_topics(access: Access) -> None:
    a, _ = access.device("dev-a", "edge/devices/dev-a/desired", "edge/devices/dev-b/desired", "edge/#")
    b, _ = access.device("dev-b", "edge/devices/dev-b/desired", "edge/devices/dev-a/desired", "edge/#")
    observer = access.observer.link

    # Its own desired state reaches each device; the other's never does (the observer publishes B's first).
    observer.publish("edge/devices/dev-b/desired", b"desired-for-b")
    observer.publish("edge/devices/dev-a/desired", b"desired-for-a")
    wait_for(lambda: a.got(b"desired-for-a") and b.got(b"desired-for-b"), what="each device's own desired state")
    assert not a.got(b"desired-for-b") and not b.got(b"desired-for-a")
    assert {t for t, _ in a.received} == {"edge/devices/dev-a/desired"}, "A received beyond its own desired topic"

    # What a device publishes on its own topics is delivered; on the other's, or outside its tree, never.
    for leaf in LEAVES:
        a.publish(f"edge/devices/dev-b/{leaf}", f"forged-{leaf}".encode())
    a.publish("edge/devices/dev-a/desired", b"own-desired-forged")  # the control plane's to publish, not A's
    a.publish("edge/fleet/announcement", b"outside")
    for leaf in ("reported", "events", "telemetry", "status"):
        a.publish(f"edge/devices/dev-a/{leaf}", f"a-own-{leaf}".encode())
    wait_for(
        lambda: all(observer.got(f"a-own-{leaf}".encode()) for leaf in ("reported", "events", "telemetry", "status"))
    )
    forged = [p for _, p in observer.received if p.startswith(b"forged-") or p in (b"own-desired-forged", b"outside")]
    assert forged == [], f"delivered although forbidden: {forged}"
    assert not b.got(b"forged-desired")


def test_no_credential_takes_another_client_id(access: Access) -> None:
    victim, _ = access.device("dev-victim", "edge/devices/dev-victim/desired")
    thief_password = access.device("dev-thief")[1]
    for stolen in ("dev-victim", access.client_id, f"dev-thief-{uuid.uuid4().hex[:4]}"):
        attempt = access.connect("dev-thief", thief_password, stolen)
        assert not attempt.accepted, f"dev-thief logged in with client id {stolen}"
    wrong = access.connect("dev-victim", "not-the-password", "dev-victim")
    assert not wrong.accepted

    # The victim was never knocked off: it is still connected and still receives.
    access.observer.link.publish("edge/devices/dev-victim/desired", b"still-here")
    wait_for(lambda: victim.got(b"still-here"), what="the victim still receiving")
    assert victim.disconnected_at is None
    # Neither was the control plane: it still receives what devices publish.
    victim.publish(
        "edge/devices/dev-victim/status",
        seal(MessageKind.STATUS, "dev-victim", Presence(state=PresenceStatus.ONLINE), datetime.now(UTC)),
    )
    wait_for(
        lambda: access.api.get("/v1/devices/dev-victim").json()["presence"] == "online",
        what="the control plane receiving the victim's status",
    )
    assert access.api.get("/healthz").json()["mqtt_connected"] is True

    # No device may even be named after the control plane's user or client id (it would be pinned to it).
    for reserved in (access.client_id, CONTROL_PLANE_USER):
        access.enroll(reserved)
        answer = access.api.post(f"/v1/devices/{reserved}/broker-credentials")
        assert answer.status_code == 422, answer.text


def test_revoking_a_device_disconnects_it_at_once_and_refuses_it_again(access: Access) -> None:
    revoked, password = access.device("dev-revoked", "edge/devices/dev-revoked/desired")
    other, _ = access.device("dev-other", "edge/devices/dev-other/desired")
    device_token = mint_token(access.api, "device", "dev-revoked-artifacts", device_id="dev-revoked")

    started = time.monotonic()
    answer = access.revoke("dev-revoked")
    wait_for(lambda: revoked.disconnected_at is not None, timeout=5, what="the revoked device to be disconnected")
    assert revoked.disconnected_at is not None
    took = revoked.disconnected_at - started
    print(f"revocation to disconnect: {took * 1000:.1f} ms (including the REST call)")
    assert took < 1.0

    assert answer["broker"] == "dynsec" and len(answer["tokens_revoked"]) == 1
    assert not access.connect("dev-revoked", password, "dev-revoked").accepted
    assert "dev-revoked" not in access.observer.clients()
    who = httpx.get(f"{access.server.url}/v1/whoami", headers={"Authorization": f"Bearer {device_token}"})
    assert who.status_code == 401

    # The other device was untouched: it still publishes and receives.
    other.publish("edge/devices/dev-other/reported", b"other-still-reports")
    access.observer.link.publish("edge/devices/dev-other/desired", b"other-still-receives")
    wait_for(lambda: access.observer.link.got(b"other-still-reports") and other.got(b"other-still-receives"))
    assert other.disconnected_at is None

    # Forgetting a device takes its broker access with it, at once.
    forgotten, password = access.device("dev-forgotten")
    assert access.api.delete("/v1/devices/dev-forgotten").status_code == 204
    access.active.discard("dev-forgotten")
    wait_for(lambda: forgotten.disconnected_at is not None, timeout=5, what="the forgotten device disconnected")
    assert not access.connect("dev-forgotten", password, "dev-forgotten").accepted


def test_reconcile_makes_the_brokers_clients_equal_the_control_planes(access: Access) -> None:
    rng = random.Random(9)
    ids = [f"rc-{i}" for i in range(6)]
    passwords: dict[str, str] = {}
    for device_id in ids:
        access.enroll(device_id)
    for _ in range(24):
        device_id = rng.choice(ids)
        if rng.random() < 0.6:
            passwords[device_id] = access.issue(device_id)
        else:
            access.revoke(device_id)
        # Provisioning and revoking keep the broker equal by themselves.
        assert set(access.observer.clients()) == access.expected_clients()
    assert {d for d in ids if d in access.active}, "the sequence should leave some devices with access"

    # Behind the control plane's back: a stranger, a hijacked client id, a widened role, a lost device.
    active = sorted(d for d in ids if d in access.active)
    hijacked, lost = active[0], active[-1]
    access.broker.ctrl("createClient", "stranger", "-p", "stranger-pw")
    access.broker.ctrl("setClientId", hijacked, "anything-goes")
    access.broker.ctrl("addRoleACL", f"edge-device:{hijacked}", "subscribePattern", "edge/#", "allow")
    access.broker.ctrl("createRole", "edge-device:ghost")
    access.broker.ctrl("deleteClient", lost)
    assert "stranger" in access.observer.clients()

    report = access.api.post("/v1/broker/reconcile").json()
    assert report["deleted"] == ["stranger"]
    assert report["updated"] == [hijacked]
    assert report["created"] == [lost]  # without a password: it needs new credentials
    assert f"edge-device:{hijacked}" in report["roles_updated"]
    assert "edge-device:ghost" in report["roles_deleted"]

    clients = access.observer.clients()
    assert set(clients) == access.expected_clients()
    for device_id in access.active:
        assert clients[device_id]["clientid"] == device_id
        assert [r["rolename"] for r in clients[device_id]["roles"]] == [f"edge-device:{device_id}"]
    assert settled(access.api), "a second reconcile should find nothing to change"

    # The lost device's old password is gone with it; new credentials let it in again.
    assert not access.connect(lost, passwords[lost], lost).accepted
    assert access.connect(lost, access.issue(lost), lost).accepted


def test_an_unadministered_broker_says_so(control_plane: RunningServer) -> None:
    api = control_plane.http
    assert api.get("/v1/broker", headers=ADMIN_HEADERS).json()["admin"] == "none"
    api.put("/v1/devices/dev-none/enrollment", json={"channel": "mqtt"}).raise_for_status()
    refused = api.post("/v1/devices/dev-none/broker-credentials")
    assert refused.status_code == 409 and "mqtt.admin: none" in refused.json()["detail"]
    token = mint_token(api, "device", "dev-none-artifacts", device_id="dev-none")
    revoked = api.post("/v1/devices/dev-none/revoke").json()
    assert revoked["broker"] == "none" and len(revoked["tokens_revoked"]) == 1
    assert httpx.get(f"{control_plane.url}/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert api.post("/v1/broker/reconcile").json()["administered"] is False


def edgectl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [EDGECTL, "--url", url, "--json", *args]
    return subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=120, check=False)


def test_edgectl_issues_credentials_revokes_and_reconciles(access: Access) -> None:
    access.enroll("dev-cli")
    issued = edgectl(access.server.url, "devices", "credentials", "dev-cli")
    assert issued.returncode == 0, issued.stderr
    password = json.loads(issued.stdout)["password"]
    access.active.add("dev-cli")
    link = access.connect("dev-cli", password, "dev-cli")
    assert link.accepted

    revoked = edgectl(access.server.url, "devices", "revoke", "dev-cli")
    assert revoked.returncode == 0, revoked.stderr
    access.active.discard("dev-cli")
    assert json.loads(revoked.stdout)["broker"] == "dynsec"
    wait_for(lambda: link.disconnected_at is not None, timeout=5, what="dev-cli disconnected")

    reconciled = edgectl(access.server.url, "broker", "reconcile")
    assert reconciled.returncode == 0, reconciled.stderr
    shown = edgectl(access.server.url, "broker", "show")
    assert json.loads(shown.stdout)["admin"] == "dynsec"
    unknown = edgectl(access.server.url, "devices", "revoke", "never-heard-of")
    assert unknown.returncode == 1 and "not known" in unknown.stderr
