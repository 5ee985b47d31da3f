"""The ingest queue between the MQTT network thread and the database: bounded, drained in batches by one writer.

The network thread only hands a message over (`IngestQueue.offer`, a few dict and deque operations under a lock)
and goes back to reading from the broker; it never waits on the database, so the broker never has to queue for
the control plane under a burst. One writer thread (`IngestWriter`) takes up to `batch` messages at a time (or what
arrived within `linger_s`) and applies them as one batch (the fleet service: one transaction per batch).

A full queue (by count or by bytes) drops the message, counts it, and warns once per `warn_every` with the count.
A dropped reported state or presence is recoverable: the broker keeps the latest of each (retained), so the device
is remembered and, once the writer has caught up, its retained topics are fetched again (`resync`) a chunk at a
time that fits the queue's free room. Dropped events and telemetry are counted; they are not retained anywhere.
This module must never parse a payload or touch the database itself.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import timedelta

from control_plane.domain.ingest import (
    RETAINED_PER_DEVICE,
    DropNotice,
    Incoming,
    IngestCounters,
    note_drop,
    resync_chunk,
)
from control_plane.services.ports import Clock

log = logging.getLogger(__name__)

MAX_LOST_DEVICES = 100_000  # devices remembered for a resync; past it the oldest are forgotten (and said so)
IDLE_WAIT_S = 0.5  # how often an idle writer looks at its stop flag and pending resyncs

ApplyBatch = Callable[[Sequence[Incoming]], None]
"""Applies a batch of messages (parse, check, store in one transaction, notify); an empty one when idle."""
Resync = Callable[[Sequence[str]], bool]
"""Asks the broker again for these devices' retained topics; False: not connected now (tried again later)."""


@dataclass(frozen=True)
class IngestLimits:
    capacity: int = 50_000  # messages waiting at most
    max_bytes: int = 256 * 1024 * 1024  # their payloads' bytes at most
    batch: int = 500  # messages applied in one transaction at most
    linger_s: float = 0.02  # how long a batch waits to fill once a message is there
    warn_every: timedelta = timedelta(seconds=10)  # one warning per burst of drops


class IngestQueue:
    """Bounded FIFO of incoming messages with the counters the status route shows; safe from any thread."""

    def __init__(self, limits: IngestLimits, clock: Clock) -> None:
        self._limits = limits
        self._clock = clock
        self._items: deque[Incoming] = deque()
        self._cond = threading.Condition()
        self._counters = IngestCounters(capacity=limits.capacity)
        self._bytes = 0
        self._notice = DropNotice()
        self._lost: dict[str, None] = {}  # devices with a dropped retained message, in the order lost

    def offer(self, item: Incoming) -> bool:
        """Queue `item`, or drop it if the queue is full; never blocks beyond the lock."""
        warn: int | None = None
        with self._cond:
            room = len(self._items) < self._limits.capacity
            accepted = room and self._bytes + len(item.payload) <= self._limits.max_bytes
            if not accepted:
                self._drop(item)
                self._notice, warn = note_drop(self._notice, item.received_at, self._limits.warn_every)
            else:
                self._items.append(item)
                self._bytes += len(item.payload)
                c = self._counters
                self._counters = replace(c, received=c.received + 1, high_water=max(c.high_water, len(self._items)))
                if len(self._items) in (1, self._limits.batch):
                    self._cond.notify()  # the writer waits for the first message, then for a full batch
        if warn is not None:
            log.warning(
                "ingest queue full (%d messages, %d bytes): dropped %d message(s) since the last warning; devices "
                "whose reported state or presence was dropped are fetched again from the broker once it catches up",
                self._limits.capacity,
                self._limits.max_bytes,
                warn,
            )
        return accepted

    def take(self, wait_s: float) -> list[Incoming]:
        """Up to `batch` messages: waits up to `wait_s` for the first, then up to `linger_s` for a fuller batch."""
        batch = self._limits.batch
        with self._cond:
            if not self._items:
                self._cond.wait(wait_s)
            if self._items and len(self._items) < batch and self._limits.linger_s > 0:
                self._cond.wait_for(lambda: len(self._items) >= batch, self._limits.linger_s)
            taken = [self._items.popleft() for _ in range(min(batch, len(self._items)))]
            self._bytes -= sum(len(i.payload) for i in taken)
            return taken

    def applied(self, count: int) -> None:
        with self._cond:
            c = self._counters
            self._counters = replace(c, batches=c.batches + 1, applied=c.applied + count)

    def resync_due(self) -> list[str]:
        """Devices to fetch again now: only when the queue is empty (the writer caught up), as many as half the
        queue has room for (the other half stays for live traffic)."""
        with self._cond:
            if self._items or not self._lost:
                return []
            room = max(self._limits.capacity // 2, RETAINED_PER_DEVICE)  # a queue of 2 still fetches one device
            chunk = resync_chunk(self._lost, room, self._limits.batch)
            for device_id in chunk:
                del self._lost[device_id]
            if chunk:
                self._counters = replace(self._counters, resyncs=self._counters.resyncs + 1)
            return chunk

    def resync_failed(self, device_ids: Sequence[str]) -> None:
        with self._cond:
            for device_id in device_ids:
                self._lost.setdefault(device_id, None)
            self._counters = replace(self._counters, resyncs=self._counters.resyncs - 1)

    def counters(self) -> IngestCounters:
        with self._cond:
            return replace(
                self._counters, queued=len(self._items), queued_bytes=self._bytes, resync_pending=len(self._lost)
            )

    def lose(self, item: Incoming) -> None:
        """A queued message that could not be applied: counted as dropped, its retained state fetched again."""
        with self._cond:
            self._drop(item)

    def _drop(self, item: Incoming) -> None:
        c = self._counters
        self._counters = replace(c, dropped=c.dropped + 1, last_drop_at=item.received_at)
        if not item.leaf.retained:
            return
        if len(self._lost) >= MAX_LOST_DEVICES and item.device_id not in self._lost:
            forgotten = next(iter(self._lost))
            del self._lost[forgotten]
            log.warning("ingest: over %d devices await a resync; %s is not fetched again", MAX_LOST_DEVICES, forgotten)
        self._lost[item.device_id] = None


class IngestWriter:
    """The one thread that drains the queue: applies batches, then, when caught up, asks for lost retained state."""

    def __init__(self, queue: IngestQueue, apply: ApplyBatch) -> None:
        self._queue = queue
        self._apply = apply
        self._resync: Resync | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def set_resync(self, resync: Resync) -> None:
        self._resync = resync

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="fleet-ingest", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after applying what is queued now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout_s)
            self._thread = None

    def drain(self) -> int:
        """Apply everything queued now on the calling thread (the writer's loop, shutdown, tests); how many."""
        done = 0
        while batch := self._queue.take(wait_s=0):
            self._run(batch)
            done += len(batch)
        return done

    def resync_now(self) -> list[str]:
        """If the writer has caught up and devices lost retained messages: ask the broker for them again."""
        chunk = self._queue.resync_due()
        if not chunk:
            return []
        if self._resync is None or not self._resync(chunk):
            self._queue.resync_failed(chunk)
            return []
        log.info("ingest: fetching the retained state of %d device(s) again after dropped messages", len(chunk))
        return chunk

    def _loop(self) -> None:
        while not self._stop.is_set():
            batch = self._queue.take(wait_s=IDLE_WAIT_S)
            if batch:
                self._run(batch)
            else:
                self._run_idle()
            self.resync_now()  # does nothing unless the queue is empty now and devices await one
        self.drain()
        self._run_idle()

    def _run_idle(self) -> None:
        """An empty batch: the service writes what it holds besides messages (notes of rate-limited devices)."""
        try:
            self._apply(())
        except Exception:
            log.exception("ingest: writing the pending notes failed")

    def _run(self, batch: Sequence[Incoming]) -> None:
        try:
            self._apply(batch)
        except Exception:
            # The fleet service handles every message's faults itself; this is a database outage or a bug. The
            # batch is lost like a dropped one: its devices' retained state is fetched again.
            log.exception("ingest: applying a batch of %d message(s) failed", len(batch))
            for item in batch:
                self._queue.lose(item)
        self._queue.applied(len(batch))
