"""A device is not trusted about itself, over the real broker and the real control plane (docs/security.md,
"A stolen or rogue device"): what it reports cannot move it between selections, claim generations or builds never
sent to it, or make anything of a device nobody enrolled; flooding cannot stall the others or push out the history
the control plane recorded about it."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from edge_agent.protocol import (
    DeviceEvent,
    EventStep,
    HardwareFacts,
    MessageKind,
    ModelTelemetry,
    Presence,
    PresenceStatus,
    Telemetry,
    seal,
)
from tests.integration.control_plane.conftest import (
    DeviceClient,
    RunningServer,
    connect_device,
    server_settings,
    start_server,
)
from tests.integration.control_plane.helpers import reported
from tests.support import Mosquitto, enroll_device, password_for, wait_for

pytestmark = pytest.mark.integration
Factory = Callable[[str], DeviceClient]


@pytest.fixture
def fresh(mosquitto: Mosquitto, device_factory: Factory) -> Callable[[str], DeviceClient]:
    """A bare MQTT client as a device of its own id (a broker login of its own), no state left by other tests."""

    def make(device_id: str) -> DeviceClient:
        mosquitto.add_user(device_id, password_for(device_id))
        return device_factory(device_id)

    return make


def device(api: httpx.Client, device_id: str) -> dict[str, Any]:
    answer = api.get(f"/v1/devices/{device_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def events(api: httpx.Client, device_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = api.get(f"/v1/devices/{device_id}/events", params={"limit": 1000}).json()
    return found


def selected(api: httpx.Client, selector: str) -> set[str]:
    return {d["id"] for d in api.get("/v1/devices", params={"selector": selector}).json()}


def control_plane_event(api: httpx.Client, device_id: str, step: str) -> dict[str, Any] | None:
    return next((e for e in events(api, device_id) if e["step"] == step and e["source"] == "control-plane"), None)


def test_labels_channel_and_gpu_class_claimed_by_a_report_change_no_selection(
    api: httpx.Client, fresh: Factory
) -> None:
    enroll_device(api, "trust-claims", labels={"site": "trusted"})
    dev = fresh("trust-claims")
    claim = reported("trust-claims", labels={"site": "attacker"}, gpu_class="dgpu-hopper").model_copy(
        update={
            "channel": "ansible",
            "hardware": HardwareFacts(gpu_class="dgpu-hopper", arch="x86_64", compute_capability="9.0", cpu_count=2),
        }
    )
    dev.send(MessageKind.REPORTED, claim)
    event = wait_for(lambda: control_plane_event(api, "trust-claims", "claim_ignored"), what="the claim recorded")
    assert "labels site=attacker" in event["reason"] and "GPU class dgpu-hopper" in event["reason"]
    assert "channel ansible" in event["reason"] and "compute_capability 9.0" in event["reason"]
    shown = device(api, "trust-claims")
    assert (shown["labels"], shown["gpu_class"], shown["channel"]) == ({"site": "trusted"}, "cpu-x86_64", "mqtt")
    assert shown["hardware"]["compute_capability"] is None
    assert shown["reported"]["labels"] == {"site": "attacker"}  # stored as what it is: the device's claim
    assert "trust-claims" not in selected(api, "site=attacker") | selected(api, "gpu_class=dgpu-hopper")
    assert "trust-claims" in selected(api, "site=trusted,gpu_class=cpu-x86_64")

    # An operator decides labels; a viewer cannot.
    viewer = api.post("/v1/tokens", json={"name": "labels-viewer", "role": "viewer"}).json()["token"]
    forbidden = httpx.put(
        f"{api.base_url}/v1/devices/trust-claims/labels",
        json={"labels": {"site": "viewer"}},
        headers={"Authorization": f"Bearer {viewer}"},
    )
    assert forbidden.status_code == 403
    assert api.put("/v1/devices/trust-claims/labels", json={"labels": {"site": "moved"}}).status_code == 200
    assert "trust-claims" in selected(api, "site=moved") and "trust-claims" not in selected(api, "site=trusted")
    assert control_plane_event(api, "trust-claims", "labels_set") is not None


def test_a_report_of_a_generation_or_build_never_issued_is_refused_with_an_event(
    api: httpx.Client, fresh: Factory
) -> None:
    enroll_device(api, "trust-unissued", labels={"site": "unissued"})
    dev = fresh("trust-unissued")
    dev.send(MessageKind.REPORTED, reported("trust-unissued", applied=7))
    refused = wait_for(lambda: control_plane_event(api, "trust-unissued", "report_refused"), what="a refused report")
    assert "applied generation 7" in refused["reason"] and "generation 0 is the newest issued" in refused["reason"]
    dev.send(MessageKind.REPORTED, reported("trust-unissued", models=(("made-up", 3),)))
    wait_for(
        lambda: any("never sent to it" in (e["reason"] or "") for e in events(api, "trust-unissued")),
        what="the unissued build refused",
    )
    assert device(api, "trust-unissued")["reported"] is None  # neither was stored
    dev.send(MessageKind.REPORTED, reported("trust-unissued"))  # a truthful report is
    wait_for(lambda: device(api, "trust-unissued")["reported"] is not None, what="the truthful report stored")
    assert device(api, "trust-unissued")["reported"]["applied_generation"] == 0


def test_a_device_nobody_enrolled_leaves_no_trace(api: httpx.Client, fresh: Factory) -> None:
    stranger, barrier = fresh("trust-stranger"), fresh("trust-barrier")
    enroll_device(api, "trust-barrier")
    at = datetime.now(UTC)
    stranger.send(MessageKind.EVENT, DeviceEvent(generation=0, step=EventStep.ERROR, reason="unenrolled", at=at))
    stranger.send(MessageKind.STATUS, Presence(state=PresenceStatus.ONLINE))
    stranger.send(MessageKind.REPORTED, reported("trust-stranger", labels={"site": "anywhere"}))
    # The broker acknowledged those before the barrier's report, and the control plane handles them in order.
    barrier.send(MessageKind.REPORTED, reported("trust-barrier"))
    wait_for(lambda: device(api, "trust-barrier")["reported"] is not None, what="the barrier's report")
    assert api.get("/v1/devices/trust-stranger").status_code == 404
    assert api.get("/v1/devices/trust-stranger/events").status_code == 404
    assert "trust-stranger" not in selected(api, "site=anywhere")


# -- flooding ------------------------------------------------------------------------------------------------------

EVENTS_KEPT = 20
BURST = 50
# Half events, half telemetry naming 32 models each. Without per-device limits this flood delays another device's
# report by about 1.1 s here (each message a transaction); with them by about 0.15 s (dropped before parsing).
FLOOD = 800


@pytest.fixture
def strict_plane(tmp_path: Path) -> Iterator[tuple[RunningServer, Mosquitto]]:
    """A control plane of its own on a private broker, with small per-device limits."""
    broker = Mosquitto(workdir=tmp_path / "broker")
    broker.start()
    settings = server_settings(broker, tmp_path / "cp").model_copy(
        update={"device_events_kept": EVENTS_KEPT, "device_message_burst": BURST, "device_messages_per_s": 5.0}
    )
    running = start_server(settings)
    try:
        yield running, broker
    finally:
        running.stop()
        broker.stop()


def test_a_flooding_device_does_not_delay_another_or_push_out_what_the_control_plane_recorded(
    strict_plane: tuple[RunningServer, Mosquitto],
) -> None:
    plane, broker = strict_plane
    api = plane.http
    for device_id in ("dev-5", "dev-6"):
        enroll_device(api, device_id, labels={"site": "flood"})
    api.put("/v1/devices/dev-5/labels", json={"labels": {"site": "flood", "note": "kept"}})
    flooder, victim = connect_device(broker, "dev-5"), connect_device(broker, "dev-6")
    try:
        now = datetime.now(UTC)
        event = seal(MessageKind.EVENT, "dev-5", DeviceEvent(generation=0, step=EventStep.ERROR, at=now), now)
        windows = [ModelTelemetry(name=f"m{i}", version=1, requests=1, errors=0) for i in range(32)]
        telemetry = seal(MessageKind.TELEMETRY, "dev-5", Telemetry(window_s=1, models=windows), now)
        # Within what the broker queues for one subscriber (Mosquitto's max_queued_messages, 1000): past that the
        # broker itself drops messages to the control plane, whoever sent them (docs/security.md says so).
        for i in range(FLOOD):
            topic, payload = ("events", event) if i % 2 else ("telemetry", telemetry)
            last = flooder.client.publish(f"edge/devices/dev-5/{topic}", payload, qos=0)
        last.wait_for_publish(timeout=30)

        started = time.monotonic()
        victim.send(MessageKind.REPORTED, reported("dev-6"))
        wait_for(lambda: device(api, "dev-6")["reported"] is not None, timeout=60, what="the victim's report")
        delay = time.monotonic() - started
        print(f"\nthe victim's report was stored {delay:.2f} s after it was sent, behind {FLOOD} flood messages")
        assert delay < 1.0

        noted = wait_for(lambda: control_plane_event(api, "dev-5", "rate_limited"), what="the flood noted")
        assert "dropped" in noted["reason"]
        own = [e for e in events(api, "dev-5") if e["source"] == "device"]
        assert 0 < len(own) <= EVENTS_KEPT
        assert control_plane_event(api, "dev-5", "labels_set") is not None  # not pushed out
        assert device(api, "dev-6")["presence"] == "online"
    finally:
        for client in (flooder, victim):
            client.client.disconnect()
            client.client.loop_stop()
