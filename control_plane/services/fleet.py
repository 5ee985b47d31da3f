"""The fleet: turn what devices publish (reported state, events, presence, telemetry) into stored device state.

Messages come in on paho's network thread (`handle_message`), which only checks the topic, the device's rate and
the payload's size and hands the message to the ingest queue (services/ingest.py); it never parses a body or waits
on the database. The ingest writer applies them in batches (`_apply_batch`): each message parsed and checked on its
own as before, then one transaction for the batch (domain/ingest.py says what is kept), then the listeners are
called once with the devices whose report or telemetry changed. A report a playbook hands back (`accept_report`)
takes the same path as a batch of one.

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
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from control_plane.domain.errors import Conflict, InvalidInput, NotFound
from control_plane.domain.fleet import (
    ControlPlaneStep,
    DeviceEventRecord,
    DeviceFacts,
    DeviceView,
    EventSource,
    presence,
)
from control_plane.domain.ingest import DeviceChange, Incoming, IngestCounters, Leaf, WritesBuilder
from control_plane.domain.paging import Page, check_limit, page_of
from control_plane.domain.playbooks import AnsibleConnection
from control_plane.domain.rates import RatePolicy, RateState, admit, idle
from control_plane.domain.reports import check_report, issued_telemetry
from control_plane.domain.selectors import Selector, SelectorError, parse_selector
from control_plane.services.ingest import IngestLimits, IngestQueue, IngestWriter, Resync
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
    open_events,
)
from edge_agent.protocol.topics import validate_device_id
from edge_agent.protocol.vocabulary import Channel

log = logging.getLogger(__name__)

DeviceListener = Callable[[Mapping[str, DeviceChange]], None]
"""Called once per applied batch with the devices whose stored report or telemetry changed."""

# Largest payload per kind of message, checked before parsing (a report carries up to 32 models and the hardware).
MAX_MESSAGE_BYTES: Mapping[str, int] = {
    "reported": 128 * 1024,
    "events": 64 * 1024,  # a batch of up to 16 events, each reason at most 2,000 characters
    "telemetry": 32 * 1024,
    "status": 2048,
}
MAX_TRACKED_DEVICES = 100_000  # rate buckets kept in memory; idle ones are forgotten past this
MAX_PENDING_NOTES = 10_000  # rate-limit notes waiting for the writer (one per device per minute at most)


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
        ingest: IngestLimits | None = None,
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
        self._notes: deque[DeviceEventRecord] = deque(maxlen=MAX_PENDING_NOTES)  # written by the next batch
        self._queue = IngestQueue(ingest or IngestLimits(), clock)
        self._writer = IngestWriter(self._queue, self._apply_batch)

    def on_report(self, listener: DeviceListener) -> None:
        """Call `listener(device_ids)` after each batch that stored reported states or telemetry (rollouts move on)."""
        self._listeners.append(listener)

    # -- the ingest writer ----------------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the writer thread that applies queued messages."""
        self._writer.start()

    def stop(self) -> None:
        """Apply what is queued, then stop the writer."""
        self._writer.stop()

    def drain(self) -> int:
        """Apply every queued message now, on the calling thread; how many there were."""
        done = self._writer.drain()
        self._apply_batch(())  # notes of messages dropped over their rate, if no message came after them
        return done

    def set_resync(self, resync: Resync) -> None:
        """How to ask the broker again for devices' retained topics after the queue dropped some (the MQTT link)."""
        self._writer.set_resync(resync)

    def resync_now(self) -> list[str]:
        """Fetch again the retained state of devices whose messages were dropped, if the queue has caught up."""
        return self._writer.resync_now()

    def ingest_counters(self) -> IngestCounters:
        return self._queue.counters()

    # -- queries ----------------------------------------------------------------------------------------------
    def list_devices(self, selector_text: str | None = None) -> list[DeviceView]:
        """Every device the selector matches, by id (the store filters: decision 0013); the API pages instead."""
        now = self._clock()
        found = self._store.select_devices(self._selector(selector_text))
        return [DeviceView(d, presence(d, now, self._offline_after)) for d in found]

    def page_devices(self, selector_text: str | None, cursor: str | None, limit: int) -> Page[DeviceView]:
        """Up to `limit` matching devices with an id above `cursor`, and the next page's cursor (None: the last)."""
        check_limit(limit)
        now = self._clock()
        found = self._store.page_devices(self._selector(selector_text), cursor, limit + 1)
        page = page_of(found, limit, lambda d: d.id)
        return Page(tuple(DeviceView(d, presence(d, now, self._offline_after)) for d in page.items), page.next_cursor)

    @staticmethod
    def _selector(text: str | None) -> Selector:
        try:
            return parse_selector(text)
        except SelectorError as exc:
            raise InvalidInput(str(exc)) from exc

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
        """Check a device's reported state against what was issued, store it and wake the listeners: the batch path
        of an MQTT report, with a batch of one, for a report a playbook handed back (the Ansible channel)."""
        now = self._clock()
        writes = WritesBuilder()
        device = self._store.device_facts([reported.device_id]).get(reported.device_id)
        self._check_report(device, reported, now, writes)
        self._store_writes(writes)

    # -- incoming messages ------------------------------------------------------------------------------------
    def handle_message(self, topic: str, payload: bytes) -> None:
        """Called on paho's network thread: cheap checks, then the ingest queue (never the database)."""
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
        if len(payload) > limit:
            log.warning(
                "dropped a malformed %s message from %s: %d bytes, over the %d-byte limit of %s messages",
                leaf,
                device_id,
                len(payload),
                limit,
                leaf,
            )
            return
        self._queue.offer(Incoming(device_id, Leaf(leaf), payload, self._clock()))

    def _apply_batch(self, batch: Sequence[Incoming]) -> None:
        """Parse and check each message as it came, then store what was accepted in one transaction."""
        notes = self._take_notes()
        if not batch and not notes:
            return
        devices = self._store.device_facts({m.device_id for m in batch})
        writes = WritesBuilder()
        for note in notes:
            writes.event(note, note.at)
        for message in batch:
            try:
                self._dispatch(message, devices.get(message.device_id), writes)
            except ProtocolError as exc:
                log.warning("dropped a malformed %s message from %s: %s", message.leaf.value, message.device_id, exc)
        self._store_writes(writes)

    def _dispatch(self, message: Incoming, device: DeviceFacts | None, writes: WritesBuilder) -> None:
        device_id, now, payload = message.device_id, message.received_at, message.payload
        if message.leaf is Leaf.REPORTED:
            envelope, reported = open_envelope(payload, MessageKind.REPORTED, ReportedState)
            _same_device(device_id, envelope.device_id, reported.device_id)
            self._check_report(device, reported, now, writes)
            return
        if message.leaf is Leaf.EVENTS:
            envelope, events = open_events(payload)
            _same_device(device_id, envelope.device_id)
            if device is not None:
                for event in events:
                    writes.event(_event_record(device_id, event), now)
        elif message.leaf is Leaf.STATUS:
            envelope, status = open_envelope(payload, MessageKind.STATUS, Presence)
            _same_device(device_id, envelope.device_id)
            if device is not None:
                writes.status(device_id, status.state, now)
        else:
            envelope, telemetry = open_envelope(payload, MessageKind.TELEMETRY, Telemetry)
            _same_device(device_id, envelope.device_id)
            if device is not None:
                self._accept_telemetry(device, telemetry, now, writes)
        if device is None:
            self._unknown(device_id, message.leaf.value)

    def _check_report(
        self, device: DeviceFacts | None, reported: ReportedState, now: datetime, writes: WritesBuilder
    ) -> None:
        if device is None:
            self._unknown(reported.device_id, "reported")
            return
        verdict = check_report(device, reported)
        if verdict.refusal is not None:
            self._record_into(writes, device.id, ControlPlaneStep.REPORT_REFUSED, f"report refused: {verdict.refusal}")
            return
        if verdict.claims:
            claims = "the device claims " + "; ".join(verdict.claims)
            self._record_into(writes, device.id, ControlPlaneStep.CLAIM_IGNORED, claims)
        writes.report(reported, now, adopt_hardware=verdict.adopt_hardware)

    @staticmethod
    def _accept_telemetry(device: DeviceFacts, telemetry: Telemetry, now: datetime, writes: WritesBuilder) -> None:
        models = issued_telemetry(device, telemetry.models)
        if len(models) != len(telemetry.models):
            log.debug("%s: dropped telemetry windows of model versions never sent to it", device.id)
            telemetry = telemetry.model_copy(update={"models": models})
        writes.telemetry(device.id, telemetry, now)

    def _store_writes(self, builder: WritesBuilder) -> None:
        writes = builder.build()
        if writes.empty:
            return
        changes = writes.changes(self._store.apply_writes(writes))
        if changes:
            self._notify(changes)

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
            note = self._refusal(device_id, ControlPlaneStep.RATE_LIMITED, reason, dedupe=False)
            if note is not None:
                self._notes.append(note)  # written by the writer: this is paho's thread
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
        event = self._refusal(device_id, step, reason, dedupe)
        if event is not None:
            self._store.add_event(event, event.at)

    def _record_into(self, writes: WritesBuilder, device_id: str, step: ControlPlaneStep, reason: str) -> None:
        event = self._refusal(device_id, step, reason)
        if event is not None:
            writes.event(event, event.at)

    def _refusal(
        self, device_id: str, step: ControlPlaneStep, reason: str, dedupe: bool = True
    ) -> DeviceEventRecord | None:
        """Log, and make the control-plane event of the device that records it (never trimmed by the device's
        own); the same reason again within `repeat_after` is not recorded twice (None), so a device cannot grow
        its history this way."""
        now = self._clock()
        key = (device_id, step.value)
        if dedupe:
            with self._lock:
                last = self._recorded.get(key)
                if last is not None and last[0] == reason and now - last[1] < self._limits.repeat_after:
                    return None
                self._remember(key, (reason, now))
        log.warning("%s: %s", device_id, reason)
        return DeviceEventRecord(device_id, 0, step.value, None, None, reason[:2000], now, EventSource.CONTROL_PLANE)

    def _take_notes(self) -> list[DeviceEventRecord]:
        notes = []
        while self._notes:
            try:
                notes.append(self._notes.popleft())
            except IndexError:
                break
        return notes

    def _remember(self, key: tuple[str, str], value: tuple[str, datetime]) -> None:
        if len(self._recorded) >= MAX_TRACKED_DEVICES:
            self._recorded.clear()  # forgetting only means one more log line or event
        self._recorded[key] = value

    def _notify(self, changes: Mapping[str, DeviceChange]) -> None:
        for listener in self._listeners:
            try:
                listener(changes)
            except Exception:
                log.exception("a listener failed on the reports of %d device(s)", len(changes))

    def label_keys(self, limit: int) -> list[tuple[str, int]]:
        """Up to `limit` label keys the fleet carries, by key, with how many devices carry each (issue 14: a
        selector's unknown key is named, with the keys that exist)."""
        check_limit(limit)
        return self._store.label_keys(limit)

    def forget_released(self, device_id: str) -> None:
        """Remove a device with its events and telemetry although a rollout holds it: the rollout service has
        already stopped waiting for it (`devices forget --force`, RolloutService.forget_device)."""
        self.get_device(device_id)
        self._store.remove_device(device_id)


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
