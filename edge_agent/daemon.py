"""`edge-agent run`: wires the core to MQTT, downloads, onnxruntime and the inference API, and runs them.

Threads: uvicorn in the main thread (inference API), paho's network thread (MQTT), one apply worker that always
takes the newest desired document, one telemetry thread, and with `builder: true` one build-worker thread.
The last-known-good models are served before MQTT is even tried, so a device with no broker in reach still
answers at once. Settings come in as one AgentConfig.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import uvicorn
from pydantic import BaseModel, ValidationError

from edge_agent import __version__
from edge_agent.adapters.download import HttpFetcher
from edge_agent.adapters.hardware import Detected, detect_hardware
from edge_agent.adapters.host_metrics import HostMetrics
from edge_agent.adapters.lockfile import apply_lock
from edge_agent.adapters.mqtt_link import MqttLink
from edge_agent.adapters.mqtt_session import LastWill
from edge_agent.adapters.onnx_runner import OnnxRunnerFactory, available_providers, runtime_version
from edge_agent.adapters.tunnel import TunnelLink, tunnel_options
from edge_agent.builder import BuilderThread
from edge_agent.config import AgentConfig
from edge_agent.core.agent import AgentCore
from edge_agent.core.context import AgentIdentity
from edge_agent.core.errors import LockBusyError
from edge_agent.core.journal_file import Journal
from edge_agent.core.metrics import AgentTally
from edge_agent.core.ports import AgentPorts, ChangeSink, EventSink, drop_event, ignore_change
from edge_agent.core.store import Store
from edge_agent.core.telemetry import RequestWindow
from edge_agent.outbox import Later, Outbox
from edge_agent.protocol import (
    DeviceEvent,
    EventBatch,
    MessageKind,
    Presence,
    PresenceStatus,
    ProtocolError,
    SignedDesiredState,
    Telemetry,
    Topics,
    Verifier,
    open_envelope,
    seal,
)
from edge_agent.protocol.vocabulary import Channel
from edge_agent.serving.app import create_app
from edge_agent.serving.metrics import metrics_router
from edge_agent.tunnel_reporting import TunnelReporter

log = logging.getLogger(__name__)
REFRESH_INTERVAL_S = 5.0


def utcnow() -> datetime:
    return datetime.now(UTC)


def detect(config: AgentConfig) -> Detected:
    return detect_hardware(available_providers(), runtime_version(), config.gpu_class)


def build_core(
    config: AgentConfig,
    detected: Detected,
    channel: Channel,
    on_event: EventSink = drop_event,
    on_change: ChangeSink = ignore_change,
    artifact_dir: Path | None = None,
    tally: AgentTally | None = None,
) -> AgentCore:
    """The core with its real ports: the data directory's journal and slots, HTTP (or `artifact_dir`) downloads,
    onnxruntime runners. The daemon and `edge-agent apply` both build theirs here."""
    identity = AgentIdentity(
        device_id=config.device_id,
        hardware=detected.facts,
        agent_version=__version__,
        labels=config.labels,
        serving_url=config.serving.url(),
        channel=channel,
    )
    fetcher = HttpFetcher(
        config.download.timeout_s,
        config.download.max_attempts,
        artifact_dir=artifact_dir,
        deadline_s=config.deadlines.download_s,
        token=config.control_plane_token.get_secret_value() if config.control_plane_token else None,
        ca_file=config.control_plane_ca_file,
        on_bytes=tally.downloaded if tally is not None else AgentTally().downloaded,
        on_retry=tally.retried if tally is not None else AgentTally().retried,
    )
    ports = AgentPorts(
        verifier=Verifier(config.control_plane_public_key),
        fetcher=fetcher,
        runners=OnnxRunnerFactory(detected.gpu_present, config.data_dir, detected.facts),
        journal=Journal(config.data_dir),
        store=Store(config.data_dir),
        clock=utcnow,
        on_event=on_event,
        on_change=on_change,
    )
    return AgentCore(identity, ports, deadlines=config.deadlines.to_core())


def parse_desired(payload: bytes) -> SignedDesiredState:
    """A signed desired state from an MQTT envelope or, for the Ansible channel, the bare signed document."""
    try:
        return SignedDesiredState.model_validate_json(payload)
    except ValidationError:
        _, signed = open_envelope(payload, MessageKind.DESIRED, SignedDesiredState)
        return signed


class ApplyWorker:
    """One thread applying the newest desired document; older unapplied ones are superseded, never queued."""

    def __init__(self, core: AgentCore, data_dir: Path) -> None:
        self._core = core
        self._data_dir = data_dir
        self._latest: SignedDesiredState | None = None
        self._wake = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="apply-worker", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def submit(self, signed: SignedDesiredState) -> None:
        with self._wake:
            self._latest = signed
            self._wake.notify()

    def stop(self) -> None:
        with self._wake:
            self._stopping = True
            self._wake.notify()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        first = True  # the first pass runs at once: it loads again the previous versions a restart left on disk
        while True:
            with self._wake:
                if self._latest is None and not self._stopping and not first:
                    self._wake.wait(timeout=REFRESH_INTERVAL_S)
                first = False
                if self._stopping:
                    return
                signed, self._latest = self._latest, None
            try:
                self._step(signed)
            except Exception:
                log.exception("apply worker step failed; the agent keeps serving")

    def _step(self, signed: SignedDesiredState | None) -> None:
        try:
            with apply_lock(self._data_dir, timeout_s=0 if signed is None else 600):
                self._core.refresh_from_disk()  # an `edge-agent apply` may have changed the journal
                if signed is not None:
                    self._core.handle(signed)
        except LockBusyError as exc:
            if signed is not None:
                log.error("%s; will retry this document", exc)
                self.submit(signed)


class _Server(uvicorn.Server):
    """uvicorn re-raises SIGTERM after its shutdown, which would kill the process before the agent says goodbye
    (offline presence) and stops its threads; the daemon handles the signals itself instead."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    def request_exit(self) -> None:
        self.should_exit = True


class Daemon:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.topics = Topics(config.mqtt.topic_prefix)
        self.device_id = config.device_id
        self.window = RequestWindow(config.telemetry_interval_s)
        self.tally = AgentTally()  # events and downloads, for /metrics (requests are counted by the window)
        detected = detect(config)
        self.later = Later()
        self.outbox = Outbox(self._publish_events, self._publish_reported, self.later)
        on_event = self.tally.counting(self.outbox.event)
        self.core = build_core(config, detected, Channel.MQTT, on_event, self.outbox.changed, tally=self.tally)
        self.builder = self._builder(config, detected)
        self.worker = ApplyWorker(self.core, config.data_dir)
        self.link = MqttLink(
            config.mqtt,
            client_id=self.device_id,
            subscribe_topic=self.topics.desired(self.device_id),
            on_message=self._on_desired,
            on_connected=self._on_connected,
            will=self._presence(PresenceStatus.OFFLINE),
        )
        self._stop = threading.Event()
        self._metrics = HostMetrics()
        self.tunnel_report: TunnelReporter | None = None
        self.tunnel = self._tunnel(config)
        if self.tunnel is not None:  # its health rides in the reported state; a change worth telling asks for one
            interval = config.tunnel.health_interval_s
            self.tunnel_report = TunnelReporter(self.tunnel.health, self.outbox.changed, interval)

    def run(self) -> None:
        resume = self.core.recover()  # last-known-good models are loaded before anything else
        log.info("serving generation %d: %s", self.core.state.applied_generation, sorted(self.core.state.active))
        if resume is not None:
            self.worker.submit(resume)
        self.worker.start()
        if self.config.mqtt.enabled:
            self.link.start()
        else:
            log.info("mqtt.enabled is false: serving and applying only what `edge-agent apply` installs")
        threading.Thread(target=self._telemetry_loop, name="telemetry", daemon=True).start()
        if self.builder is not None:
            self.builder.start()
        if self.tunnel is not None and self.tunnel_report is not None:
            self.tunnel_report.start()
            self.tunnel.start()
        app = create_app(self.core.table, self.window, time.monotonic, self.config.serving.limits())
        app.include_router(metrics_router(self.core.table, self.window, self.tally))
        server = _Server(
            uvicorn.Config(
                app,
                host=self.config.serving.host,
                port=self.config.serving.port,
                log_level="warning",
            )
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda _signum, _frame: server.request_exit())
        try:
            server.run()
        finally:
            self._stop.set()
            if self.builder is not None:
                self.builder.stop()
            self.worker.stop()
            self.outbox.flush()
            self.later.close()
            if self.tunnel is not None and self.tunnel_report is not None:
                self.tunnel_report.stop()
                self.tunnel.stop()
            self.link.stop(farewell=self._presence(PresenceStatus.OFFLINE))

    def _tunnel(self, config: AgentConfig) -> TunnelLink | None:
        """The one outbound tunnel (tunnel.enabled; the config validated its host key and key file)."""
        if not config.tunnel.enabled or config.device_key_file is None:
            return None
        serving = (config.serving.host, config.serving.port)
        options = tunnel_options(config.device_id, config.tunnel, config.device_key_file, serving)
        return TunnelLink(options, on_change=self._tunnel_changed)

    def _tunnel_changed(self) -> None:
        if self.tunnel_report is not None:
            self.tunnel_report.changed()

    @staticmethod
    def _builder(config: AgentConfig, detected: Detected) -> BuilderThread | None:
        if not config.builder or config.control_plane_url is None:
            return None
        token = config.control_plane_token.get_secret_value() if config.control_plane_token else None
        return BuilderThread(
            config.control_plane_url,
            config.device_id,
            detected.facts,
            config.builds_dir(),
            token,
            config.control_plane_ca_file,
        )

    # -- MQTT side -----------------------------------------------------------------------------------------

    def _presence(self, status: PresenceStatus) -> LastWill:
        payload = seal(MessageKind.STATUS, self.device_id, Presence(state=status), utcnow())
        return LastWill(self.topics.status(self.device_id), payload)

    def _on_connected(self) -> None:
        online = self._presence(PresenceStatus.ONLINE)
        self.link.publish(online.topic, online.payload, qos=1, retain=True)
        self.outbox.flush(report=True)

    def _on_desired(self, payload: bytes) -> None:
        if not payload:
            return  # a cleared retained message
        try:
            _, signed = open_envelope(payload, MessageKind.DESIRED, SignedDesiredState)
        except ProtocolError as exc:
            log.warning("malformed desired-state message refused: %s", exc)
            self.core.report_rejected(0, f"malformed desired-state message: {exc}")
            return
        self.worker.submit(signed)

    def _publish(self, topic: str, kind: MessageKind, body: BaseModel, qos: int = 1, retain: bool = False) -> None:
        self.link.publish(topic, seal(kind, self.device_id, body, utcnow()), qos=qos, retain=retain)

    def _publish_events(self, events: Sequence[DeviceEvent]) -> None:
        for e in events:
            log.info("event %s gen=%d model=%s %s", e.step.value, e.generation, e.model, e.reason or "")
        self._publish(self.topics.events(self.device_id), MessageKind.EVENTS, EventBatch(events=list(events)))

    def _publish_reported(self) -> None:
        reported = self.core.reported()
        if self.tunnel_report is not None:
            reported = self.tunnel_report.attach(reported)
        self._publish(self.topics.reported(self.device_id), MessageKind.REPORTED, reported, retain=True)

    def _telemetry_loop(self) -> None:
        interval = self.config.telemetry_interval_s
        self._metrics.sample()
        while not self._stop.wait(interval):
            telemetry = Telemetry(
                window_s=interval, models=self.window.snapshot(time.monotonic()), device=self._metrics.sample()
            )
            self._publish(self.topics.telemetry(self.device_id), MessageKind.TELEMETRY, telemetry, qos=0)
