"""The fleet: turn what devices publish (reported state, events, presence, telemetry) into stored device state.

Every payload is untrusted: a malformed one, or one whose envelope names another device than its topic, is
logged and dropped; it never raises out of `handle_message` and never stops later messages.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import timedelta

from control_plane.domain.errors import Conflict, InvalidInput, NotFound
from control_plane.domain.fleet import DeviceEventRecord, DeviceView, presence
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.selectors import SelectorError, parse_selector
from control_plane.services.ports import Clock, FleetStore, RolloutStore
from edge_agent.protocol import (
    DeviceEvent,
    HardwareFacts,
    MessageKind,
    Presence,
    ProtocolError,
    ReportedState,
    Telemetry,
    Topics,
    open_envelope,
)
from edge_agent.protocol.topics import validate_device_id

log = logging.getLogger(__name__)

DeviceListener = Callable[[str], None]


class FleetService:
    def __init__(
        self,
        store: FleetStore,
        topics: Topics,
        clock: Clock,
        offline_after: timedelta,
        rollouts: RolloutStore | None = None,
    ) -> None:
        self._store = store
        self._rollouts = rollouts
        self._topics = topics
        self._clock = clock
        self._offline_after = offline_after
        self._listeners: list[DeviceListener] = []

    def on_report(self, listener: DeviceListener) -> None:
        """Call `listener(device_id)` after each stored reported state or telemetry (rollouts move on)."""
        self._listeners.append(listener)

    # -- queries ----------------------------------------------------------------------------------------------
    def list_devices(self, selector_text: str | None = None) -> list[DeviceView]:
        try:
            selector = parse_selector(selector_text)
        except SelectorError as exc:
            raise InvalidInput(str(exc)) from exc
        now = self._clock()
        return [
            DeviceView(d, presence(d, now, self._offline_after))
            for d in self._store.list_devices()
            if selector.matches(d.labels, d.gpu_class)
        ]

    def get_device(self, device_id: str) -> DeviceView:
        device = self._store.get_device(device_id)
        if device is None:
            raise NotFound(f"device {device_id!r} is not known")
        windows = tuple(self._store.telemetry_windows(device_id))
        return DeviceView(device, presence(device, self._clock(), self._offline_after), windows)

    def list_events(self, device_id: str, limit: int) -> list[DeviceEventRecord]:
        self.get_device(device_id)
        return self._store.list_events(device_id, limit)

    # -- enrollment ---------------------------------------------------------------------------------------------
    def enroll(
        self,
        device_id: str,
        channel: str = "ansible",
        labels: Mapping[str, str] | None = None,
        gpu_class: str | None = None,
        hardware: HardwareFacts | None = None,
        ansible: AnsibleConnection | None = None,
    ) -> DeviceView:
        """Create or update a device. On the Ansible channel it always has a connection (default: ssh to the
        device id as host name); its GPU class comes from `hardware` when not given."""
        try:
            validate_device_id(device_id)
        except ValueError as exc:
            raise InvalidInput(f"device_id: {exc}") from exc
        if channel not in ("mqtt", "ansible"):
            raise InvalidInput(f"channel: must be mqtt or ansible, not {channel!r}")
        if ansible is None and channel == "ansible":
            ansible = AnsibleConnection()
        self._store.enroll(device_id, channel, dict(labels or {}), gpu_class, hardware, ansible, self._clock())
        return self.get_device(device_id)

    def forget(self, device_id: str) -> None:
        """Remove a device with its events and telemetry; refused while an unfinished rollout holds it."""
        self.get_device(device_id)
        if self._rollouts is not None:
            open_ones = self._rollouts.list_rollouts(only_open=True, only_device=device_id)
            if open_ones:
                names = ", ".join(f"{r.id} ({r.phase.value})" for r in open_ones)
                raise Conflict(f"device {device_id!r} is in unfinished rollout {names}: finish or abort it first")
        self._store.remove_device(device_id)

    # -- reports --------------------------------------------------------------------------------------------------
    def accept_report(self, reported: ReportedState) -> None:
        """Store a device's reported state and wake the listeners: one path for an MQTT report and for one a
        playbook handed back (the Ansible channel)."""
        self._store.apply_report(reported, self._clock())
        self._notify(reported.device_id)

    # -- incoming messages ------------------------------------------------------------------------------------
    def handle_message(self, topic: str, payload: bytes) -> None:
        parsed = self._topics.parse(topic)
        if parsed is None:
            log.warning("dropped a message on unexpected topic %r", topic)
            return
        device_id, leaf = parsed
        if not payload:
            return  # a cleared retained message
        try:
            self._dispatch(device_id, leaf, payload)
        except ProtocolError as exc:
            log.warning("dropped a malformed %s message from %s: %s", leaf, device_id, exc)

    def _dispatch(self, device_id: str, leaf: str, payload: bytes) -> None:
        now = self._clock()
        if leaf == "reported":
            envelope, reported = open_envelope(payload, MessageKind.REPORTED, ReportedState)
            _same_device(device_id, envelope.device_id, reported.device_id)
            self.accept_report(reported)
        elif leaf == "events":
            envelope, event = open_envelope(payload, MessageKind.EVENT, DeviceEvent)
            _same_device(device_id, envelope.device_id)
            self._store.add_event(_event_record(device_id, event), now)
        elif leaf == "status":
            envelope, status = open_envelope(payload, MessageKind.STATUS, Presence)
            _same_device(device_id, envelope.device_id)
            self._store.apply_status(device_id, status.state, now)
        elif leaf == "telemetry":
            envelope, telemetry = open_envelope(payload, MessageKind.TELEMETRY, Telemetry)
            _same_device(device_id, envelope.device_id)
            self._store.apply_telemetry(device_id, telemetry, now)
            self._notify(device_id)
        else:
            log.debug("ignored a message on leaf %r of %s", leaf, device_id)

    def _notify(self, device_id: str) -> None:
        for listener in self._listeners:
            try:
                listener(device_id)
            except Exception:
                log.exception("a listener failed on the report of %s", device_id)


def _same_device(topic_id: str, *claimed: str) -> None:
    for other in claimed:
        if other != topic_id:
            raise ProtocolError(f"message names device {other!r} but came on the topic of {topic_id!r}")


def _event_record(device_id: str, event: DeviceEvent) -> DeviceEventRecord:
    return DeviceEventRecord(
        device_id=device_id,
        generation=event.generation,
        step=event.step.value,
        model=event.model,
        version=event.version,
        reason=event.reason,
        at=event.at,
    )
