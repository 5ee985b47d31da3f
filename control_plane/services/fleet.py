"""The fleet: turn what devices publish (reported state, events, presence, telemetry) into stored device state.

Every payload is untrusted: a malformed one, or one whose envelope names another device than its topic, is
logged and dropped; it never raises out of `handle_message` and never stops later messages. Devices are not
trusted about themselves either (docs/security.md):
- only an enrolled device's messages are stored; an unknown device's are dropped (logged once in a while);
- each device has a message rate (a token bucket, control_plane/domain/rates.py) checked before its payload is even
  parsed, and a size limit per kind of message: a flooding device costs the others nothing;
- a report is checked against what was issued (control_plane/domain/reports.py): refused with a device event when
  it names a generation or build never sent; its labels, channel and GPU class are claims that change nothing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from control_plane.domain.errors import Conflict, InvalidInput, NotFound
from control_plane.domain.fleet import (
    ControlPlaneStep,
    DeviceEventRecord,
    DeviceView,
    EventSource,
    presence,
)
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.rates import RatePolicy, RateState, admit, idle
from control_plane.domain.reports import check_report, issued_telemetry
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
from edge_agent.protocol.vocabulary import Channel

log = logging.getLogger(__name__)

DeviceListener = Callable[[str], None]

# Largest payload per kind of message, checked before parsing (a report carries up to 32 models and the hardware).
MAX_MESSAGE_BYTES: Mapping[str, int] = {
    "reported": 128 * 1024,
    "events": 8 * 1024,
    "telemetry": 32 * 1024,
    "status": 2048,
}
MAX_TRACKED_DEVICES = 100_000  # rate buckets kept in memory; idle ones are forgotten past this


@dataclass(frozen=True)
class MessageLimits:
    rate: RatePolicy = field(default_factory=lambda: RatePolicy(per_s=5.0, burst=100))
    max_bytes: Mapping[str, int] = field(default_factory=lambda: dict(MAX_MESSAGE_BYTES))
    repeat_after: timedelta = timedelta(minutes=5)  # the same refusal is recorded again only after this


class FleetService:
    def __init__(
        self,
        store: FleetStore,
        topics: Topics,
        clock: Clock,
        offline_after: timedelta,
        rollouts: RolloutStore | None = None,
        limits: MessageLimits | None = None,
    ) -> None:
        self._store = store
        self._rollouts = rollouts
        self._topics = topics
        self._clock = clock
        self._offline_after = offline_after
        self._limits = limits or MessageLimits()
        self._listeners: list[DeviceListener] = []
        self._lock = threading.Lock()
        self._buckets: dict[str, RateState] = {}
        self._recorded: dict[tuple[str, str], tuple[str, datetime]] = {}  # (device, step) -> (reason, at)

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
        channel: Channel = Channel.ANSIBLE,
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
        if ansible is None and channel is Channel.ANSIBLE:
            ansible = AnsibleConnection()
        self._store.enroll(device_id, channel, dict(labels or {}), gpu_class, hardware, ansible, self._clock())
        return self.get_device(device_id)

    def set_labels(self, device_id: str, labels: Mapping[str, str], by: str) -> DeviceView:
        """An operator sets a device's labels (all of them): what selectors match."""
        if self._store.set_labels(device_id, dict(labels)) is None:
            raise NotFound(f"device {device_id!r} is not known")
        shown = ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "(none)"
        self._record(device_id, ControlPlaneStep.LABELS_SET, f"labels {shown} set by {by}", dedupe=False)
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
        """Check a device's reported state against what was issued, store it and wake the listeners: one path for
        an MQTT report and for one a playbook handed back (the Ansible channel)."""
        device = self._store.get_device(reported.device_id)
        if device is None:
            self._unknown(reported.device_id, "reported")
            return
        verdict = check_report(device, reported)
        if verdict.refusal is not None:
            self._record(device.id, ControlPlaneStep.REPORT_REFUSED, f"report refused: {verdict.refusal}")
            return
        if verdict.claims:
            self._record(device.id, ControlPlaneStep.CLAIM_IGNORED, "the device claims " + "; ".join(verdict.claims))
        if self._store.apply_report(reported, self._clock(), adopt_hardware=verdict.adopt_hardware) is not None:
            self._notify(device.id)

    # -- incoming messages ------------------------------------------------------------------------------------
    def handle_message(self, topic: str, payload: bytes) -> None:
        parsed = self._topics.parse(topic)
        if parsed is None:
            log.warning("dropped a message on unexpected topic %r", topic)
            return
        device_id, leaf = parsed
        if not payload:
            return  # a cleared retained message
        limit = self._limits.max_bytes.get(leaf)
        if limit is None:
            log.debug("ignored a message on leaf %r of %s", leaf, device_id)
            return
        if not self._admit(device_id):
            return  # over its rate: dropped before anything else is spent on it
        try:
            if len(payload) > limit:
                raise ProtocolError(f"{len(payload)} bytes, over the {limit}-byte limit of {leaf} messages")
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
            if not self._store.add_event(_event_record(device_id, event), now):
                self._unknown(device_id, leaf)
        elif leaf == "status":
            envelope, status = open_envelope(payload, MessageKind.STATUS, Presence)
            _same_device(device_id, envelope.device_id)
            if self._store.apply_status(device_id, status.state, now) is None:
                self._unknown(device_id, leaf)
        elif leaf == "telemetry":
            envelope, telemetry = open_envelope(payload, MessageKind.TELEMETRY, Telemetry)
            _same_device(device_id, envelope.device_id)
            self._accept_telemetry(device_id, telemetry, now)

    def _accept_telemetry(self, device_id: str, telemetry: Telemetry, now: datetime) -> None:
        device = self._store.get_device(device_id)
        if device is None:
            self._unknown(device_id, "telemetry")
            return
        models = issued_telemetry(device, telemetry.models)
        if len(models) != len(telemetry.models):
            log.debug("%s: dropped telemetry windows of model versions never sent to it", device_id)
            telemetry = telemetry.model_copy(update={"models": models})
        if self._store.apply_telemetry(device_id, telemetry, now):
            self._notify(device_id)

    # -- bounds -----------------------------------------------------------------------------------------------
    def _admit(self, device_id: str) -> bool:
        now = self._clock()
        policy = self._limits.rate
        with self._lock:
            state, admission = admit(self._buckets.get(device_id), now, policy)
            self._buckets[device_id] = state
            if len(self._buckets) > MAX_TRACKED_DEVICES:
                self._buckets = {k: v for k, v in self._buckets.items() if not idle(v, now, policy)}
        if admission.note is not None:
            reason = (
                f"sends more than {policy.per_s:g} messages/s (burst {policy.burst}): dropped {admission.note} "
                f"message(s) since the last warning"
            )
            self._record(device_id, ControlPlaneStep.RATE_LIMITED, reason, dedupe=False)
        return admission.allowed

    def _unknown(self, device_id: str, leaf: str) -> None:
        """A message from a device that is not enrolled: dropped; said once per `repeat_after` per device."""
        now = self._clock()
        key = (device_id, "unknown")
        with self._lock:
            last = self._recorded.get(key)
            if last is not None and now - last[1] < self._limits.repeat_after:
                return
            self._remember(key, ("", now))
        log.warning("dropped %s message(s) from %s: not an enrolled device (edge-agent enroll)", leaf, device_id)

    def _record(self, device_id: str, step: ControlPlaneStep, reason: str, dedupe: bool = True) -> None:
        """Log, and record as a control-plane event of the device (never trimmed by the device's own); the same
        reason again within `repeat_after` is not recorded twice, so a device cannot grow its history this way."""
        now = self._clock()
        key = (device_id, step.value)
        if dedupe:
            with self._lock:
                last = self._recorded.get(key)
                if last is not None and last[0] == reason and now - last[1] < self._limits.repeat_after:
                    return
                self._remember(key, (reason, now))
        log.warning("%s: %s", device_id, reason)
        event = DeviceEventRecord(device_id, 0, step.value, None, None, reason[:2000], now, EventSource.CONTROL_PLANE)
        self._store.add_event(event, now)

    def _remember(self, key: tuple[str, str], value: tuple[str, datetime]) -> None:
        if len(self._recorded) >= MAX_TRACKED_DEVICES:
            self._recorded.clear()  # forgetting only means one more log line or event
        self._recorded[key] = value

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
