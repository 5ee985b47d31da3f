"""Thousands of real MQTT connections driven by one thread: paho clients on paho's external-loop API.

One paho network thread per device (what `edge_agent.adapters.mqtt_session` does for the one agent of a host)
would be 10,000 threads here. Instead every client's socket sits in one selector; the mux thread reads, writes
and runs paho's housekeeping (`loop_misc`: keepalive pings, QoS 1 retries) for all of them, and runs the client
callbacks. Connecting, reconnecting and cutting a connection happen on the mux thread too (`call`), so a socket
is only ever opened, registered, closed and unregistered by one thread; other threads only publish, which paho
queues and the mux writes (paho's `on_socket_register_write` hook wakes it).

Each connection keeps the agent's MQTT 3.1.1 identity: its own client id and credentials and a retained QoS 1
last will. Must never parse a message body: the device (fleet_simulation.device) does.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

log = logging.getLogger(__name__)

MISC_INTERVAL_S = 1.0
KEEPALIVE_S = 60


class MqttMux:
    """The selector thread every simulated connection runs on."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._calls: deque[Callable[[], None]] = deque()
        self._timers: list[tuple[float, int, Callable[[], None]]] = []
        self._seq = itertools.count()
        self._clients: set[mqtt.Client] = set()
        self._writing: set[mqtt.Client] = set()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="mqtt-mux", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wake()
        self._thread.join(timeout=10)

    @property
    def on_mux_thread(self) -> bool:
        return threading.current_thread() is self._thread

    def call(self, fn: Callable[[], None], delay_s: float = 0.0) -> None:
        """Run `fn` on the mux thread (after `delay_s`)."""
        if delay_s > 0:
            self._calls.append(lambda: self._at(time.monotonic() + delay_s, fn))
        else:
            self._calls.append(fn)
        self._wake()

    def new_client(self, client_id: str, username: str, password: str) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=MQTTProtocolVersion.MQTTv311, clean_session=True
        )
        client.username_pw_set(username, password)
        client.max_queued_messages_set(0)
        client.on_socket_open = self._opened
        client.on_socket_close = self._closed
        client.on_socket_register_write = self._register_write
        client.on_socket_unregister_write = self._unregister_write
        return client

    # -- paho's external-loop hooks --------------------------------------------------------------------------

    def _opened(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._on_thread(lambda: self._register(client, sock))

    def _closed(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._on_thread(lambda: self._unregister(client, sock))

    def _register_write(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._on_thread(lambda: self._want_write(client, sock, True))

    def _unregister_write(self, client: mqtt.Client, _userdata: Any, sock: Any) -> None:
        self._on_thread(lambda: self._want_write(client, sock, False))

    def _on_thread(self, fn: Callable[[], None]) -> None:
        if self.on_mux_thread:
            fn()
        else:
            self._calls.append(fn)
            self._wake()

    def _register(self, client: mqtt.Client, sock: Any) -> None:
        if sock.fileno() < 0:
            return
        self._selector.register(sock, selectors.EVENT_READ, client)
        self._clients.add(client)

    def _unregister(self, client: mqtt.Client, sock: Any) -> None:
        self._writing.discard(client)
        self._clients.discard(client)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(sock)

    def _want_write(self, client: mqtt.Client, sock: socket.socket | None, on: bool) -> None:
        if client.socket() is not sock or client not in self._clients:
            return  # closed or replaced since
        if sock is None:
            return
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
        try:
            self._selector.modify(sock, events, client)
        except (KeyError, ValueError):
            return
        if on:
            self._writing.add(client)
        else:
            self._writing.discard(client)

    # -- the loop -------------------------------------------------------------------------------------------

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # a full pipe: the loop is awake anyway
            self._wake_w.send(b"x")

    def _at(self, when: float, fn: Callable[[], None]) -> None:
        heapq.heappush(self._timers, (when, next(self._seq), fn))

    def _loop(self) -> None:
        next_misc = time.monotonic() + MISC_INTERVAL_S
        while not self._stopping:
            now = time.monotonic()
            due = min([next_misc, *(t[0] for t in self._timers[:1])])
            for key, events in self._selector.select(timeout=max(0.0, due - now)):
                if key.data is None:
                    self._drain_wake()
                    continue
                self._service(key.data, events)
            self._run_calls()
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                self._safely(heapq.heappop(self._timers)[2])
            if now >= next_misc:
                for client in list(self._clients):
                    self._safely(client.loop_misc)
                next_misc = now + MISC_INTERVAL_S

    def _service(self, client: mqtt.Client, events: int) -> None:
        if events & selectors.EVENT_READ:
            self._safely(lambda: client.loop_read(max_packets=16))
        if events & selectors.EVENT_WRITE and client in self._clients:
            self._safely(client.loop_write)

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass

    def _run_calls(self) -> None:
        while self._calls:
            self._safely(self._calls.popleft())

    @staticmethod
    def _safely(fn: Callable[[], object]) -> None:
        try:
            fn()
        except Exception:
            log.exception("mqtt mux: a callback failed")


def raise_fd_limit(wanted: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards `wanted` (children such as Mosquitto inherit it)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY and wanted > hard else max(soft, wanted)
    if target > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])
