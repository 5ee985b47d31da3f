"""Real parts for the agent's integration tests: an artifact HTTP server (Starlette FileResponse, Range-capable,
throttled or cut on demand), `edge-agent run` subprocesses, and a control-plane MQTT client."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import uvicorn
from paho.mqtt.enums import CallbackAPIVersion
from starlette.responses import FileResponse, PlainTextResponse

from edge_agent.protocol import MessageKind, SignedDesiredState, Topics, open_events, seal
from tests.support import CONTROL_PLANE_USER, Mosquitto, free_port, password_for, python_env, wait_for


@dataclass
class Served:
    path: str
    range: str | None
    status: int = 0
    sent: int = 0


@dataclass
class ArtifactServer:
    """Serves files of `root` over HTTP on loopback and records every request."""

    root: Path
    port: int = field(default_factory=free_port)
    bytes_per_s: float | None = None
    cut_first_after: int | None = None
    ignore_range: bool = False
    requests: list[Served] = field(default_factory=list)

    def __post_init__(self) -> None:
        config = uvicorn.Config(self._app, host="127.0.0.1", port=self.port, log_level="warning", interface="asgi3")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ArtifactServer:
        self._thread.start()
        wait_for(lambda: self._server.started, what="artifact server")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def served(self, name: str) -> list[Served]:
        return [r for r in self.requests if r.path == f"/{name}"]

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        headers = dict(scope["headers"])
        record = Served(scope["path"], headers.get(b"range", b"").decode() or None)
        self.requests.append(record)
        target = self.root / scope["path"].lstrip("/")
        if not target.is_file():
            await PlainTextResponse("not found", status_code=404)(scope, receive, send)
            return
        cut = self.cut_first_after if len(self.requests) == 1 else None
        if self.ignore_range:
            scope = {**scope, "headers": [(k, v) for k, v in scope["headers"] if k != b"range"]}
        await FileResponse(target)(scope, receive, self._metered(send, record, cut))

    def _metered(self, send: Any, record: Served, cut: int | None) -> Any:
        async def metered(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                record.status = message["status"]
            if message["type"] != "http.response.body":
                await send(message)
                return
            body = message.get("body", b"")
            for start in range(0, len(body), 16384):
                chunk = body[start : start + 16384]
                if cut is not None and record.sent + len(chunk) > cut:
                    raise ConnectionAbortedError("test server cuts the transfer")
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                record.sent += len(chunk)
                if self.bytes_per_s:
                    await asyncio.sleep(len(chunk) / self.bytes_per_s)
            await send({"type": "http.response.body", "body": b"", "more_body": message.get("more_body", False)})

        return metered


@dataclass
class AgentProcess:
    """A real `edge-agent run` process; ended only by its own PID."""

    config: Path
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> AgentProcess:
        handle = self.log.open("ab")
        self.process = subprocess.Popen(
            ["edge-agent", "run", "--config", str(self.config), "--log-level", "info"],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=python_env(),
        )
        handle.close()
        return self

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def terminate(self) -> int | None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                return self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode if self.process else None

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


class ControlPlaneClient:
    """Publishes desired states and collects everything agents send, as the control plane would."""

    def __init__(
        self, broker: Mosquitto, device_id: str, topics: Topics = Topics(), clear_retained: bool = True
    ) -> None:
        self.topics = topics
        self.device_id = device_id
        self.messages: list[tuple[str, bytes, bool]] = []
        self._client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"cp-{device_id}")
        self._client.username_pw_set(CONTROL_PLANE_USER, password_for(CONTROL_PLANE_USER))
        self._client.on_message = lambda _c, _u, m: self.messages.append((m.topic, bytes(m.payload), m.retain))
        connected = threading.Event()
        self._client.on_connect = lambda *_args: connected.set()
        self._client.connect(broker.host, broker.port)
        self._client.loop_start()
        if not connected.wait(10):
            raise RuntimeError(f"the test's control-plane client for {device_id} could not connect to the broker")
        # The session's broker is shared by every test of the session (of a pytest-xdist worker, with files in an
        # order of its own): what another test left retained under this device id (its desired state, signed by
        # another key; a report of another generation) must not reach this test's agent or its assertions. An
        # observer of what this test's devices left retained passes clear_retained=False.
        if clear_retained:
            self._clear_retained()
        self._client.subscribe(f"{topics.prefix}/devices/{device_id}/#", qos=1)

    def _clear_retained(self) -> None:
        for topic in (
            self.topics.desired(self.device_id),
            self.topics.reported(self.device_id),
            self.topics.status(self.device_id),
        ):
            self._client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)

    def close(self) -> None:
        self._clear_retained()
        self._client.disconnect()
        self._client.loop_stop()

    def publish_desired(self, signed: SignedDesiredState) -> None:
        payload = seal(MessageKind.DESIRED, "control-plane", signed, signed_now())
        self.publish_raw(payload)

    def publish_raw(self, payload: bytes) -> None:
        self._client.publish(self.topics.desired(self.device_id), payload, qos=1, retain=True).wait_for_publish(5)

    def bodies(self, leaf: str) -> list[dict[str, Any]]:
        topic = f"{self.topics.prefix}/devices/{self.device_id}/{leaf}"
        return [json.loads(p)["body"] for t, p, _ in list(self.messages) if t == topic and p]

    def messages_on(self, leaf: str) -> list[str]:
        topic = f"{self.topics.prefix}/devices/{self.device_id}/{leaf}"
        return [p.decode() for t, p, _ in list(self.messages) if t == topic and p]

    def latest_reported(self) -> dict[str, Any] | None:
        reported = self.bodies("reported")
        return reported[-1] if reported else None

    def event_bodies(self) -> list[dict[str, Any]]:
        """Every step event the device sent, in order, however many each message carried."""
        topic = f"{self.topics.prefix}/devices/{self.device_id}/events"
        sent = [open_events(p)[1] for t, p, _ in list(self.messages) if t == topic and p]
        return [event.model_dump(mode="json") for events in sent for event in events]

    def events(self) -> list[str]:
        return [e["step"] for e in self.event_bodies()]


def signed_now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)
