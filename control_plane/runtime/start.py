"""`start_runtime(settings)`: the wiring steps in order, then the workers started; `Runtime.close` stops them.

The order is what this module owns: each step wires one concern (the modules beside this one) and connects to no
broker and starts no worker thread; the broker link and the workers start last, once everything they may call
exists. It never holds request logic.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from control_plane.adapters.mqtt import MqttLink
from control_plane.runtime.broker import wire_broker
from control_plane.runtime.builds import wire_builds
from control_plane.runtime.fleet import fleet_service, wire_rollouts
from control_plane.runtime.identity import device_enrollment, operator_identity
from control_plane.runtime.playbooks import recover_playbook_runs, wire_playbook_runs
from control_plane.runtime.storage import Storage, open_shared, open_storage
from control_plane.runtime.training import wire_training
from control_plane.runtime.tunnels import tunnel_sessions
from control_plane.services.audit import AuditService
from control_plane.services.build_queue import BuildQueueService
from control_plane.services.builder_registry import BuilderRegistryService
from control_plane.services.builds import BuildService
from control_plane.services.device_access import DeviceAccessService
from control_plane.services.enrollment import EnrollmentService
from control_plane.services.fleet import FleetService
from control_plane.services.identity import IdentityService
from control_plane.services.local_builder import InProcessBuilders
from control_plane.services.metrics import MetricsService, MetricsSources
from control_plane.services.playbook_runs import PlaybookRunService
from control_plane.services.registry import RegistryService
from control_plane.services.rollout_executor import RolloutExecutor
from control_plane.services.rollouts import RolloutService
from control_plane.services.training import TrainingService
from control_plane.services.tunnel_sessions import ServiceUpstream, TunnelSessionService
from control_plane.settings import ServerSettings
from edge_agent.protocol import Signer
from model_builds.capabilities import detect_builder
from model_builds.protocol import BuilderInfo


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
    """Everything behind the routes (`app.state.runtime`; api/deps.py hands out its services)."""

    settings: ServerSettings
    signer: Signer
    registry: RegistryService
    builds: BuildService
    build_queue: BuildQueueService
    builders: InProcessBuilders
    fleet: FleetService
    rollouts: RolloutService
    executor: RolloutExecutor
    training: TrainingService
    link: MqttLink
    dispose_database: Callable[[], None]
    playbook_runs: PlaybookRunService
    identity: IdentityService
    builder_registry: BuilderRegistryService
    audit: AuditService
    enrollment: EnrollmentService
    device_access: DeviceAccessService
    metrics: MetricsService
    tunnel_sessions: TunnelSessionService
    service_upstream: ServiceUpstream

    def close(self) -> None:
        """The builders and the rollout executor first, then playbook runs, broker accounts and the broker link,
        then the fleet's ingest writer (it stores what the link handed over), then training and the tunnel sessions
        still open; the database last."""
        self.builders.stop()
        self.executor.stop()
        self.playbook_runs.shutdown()
        self.device_access.stop()
        self.link.stop()
        self.fleet.stop()  # applies what the link handed over, then its ingest writer ends
        self.training.shutdown()
        self.tunnel_sessions.shutdown()
        self.dispose_database()


def start_runtime(
    settings: ServerSettings,
    clock: Callable[[], datetime] = utc_now,
    builder_info: Callable[[], BuilderInfo] = detect_builder,
) -> Runtime:
    """Create the data dir and signing key, migrate the database, wire the services, connect to the broker,
    re-queue the builds this control plane's own builders were running when it stopped, start the builders."""
    storage = open_storage(settings)
    identity = operator_identity(settings, storage.repos.tokens, clock)  # first start: writes the admin token
    shared = open_shared(settings)
    builds = wire_builds(settings, storage, shared, identity, clock, builder_info)  # re-queues interrupted builds
    fleet = fleet_service(settings, storage, shared, clock)
    broker = wire_broker(settings, storage, shared, fleet, identity, clock)
    enrollment = device_enrollment(settings, storage, identity, clock, broker.access.provisioning())
    playbook_runs = wire_playbook_runs(settings, storage, fleet, identity, clock)
    rollouts = wire_rollouts(settings, storage, shared, fleet, broker, playbook_runs, clock)
    recover_playbook_runs(playbook_runs, rollouts.push)
    training = wire_training(settings, storage, builds.registry, clock)  # fails jobs a restart interrupted
    audit = AuditService(storage.repos.audit, clock)
    sessions, upstream = tunnel_sessions(settings, storage, audit, clock)
    runtime = Runtime(
        settings=settings,
        signer=storage.signer,
        registry=builds.registry,
        builds=builds.builds,
        build_queue=builds.queue,
        builders=builds.builders,
        fleet=fleet,
        rollouts=rollouts.rollouts,
        executor=rollouts.executor,
        training=training,
        link=broker.link,
        dispose_database=storage.dispose_database,
        playbook_runs=playbook_runs,
        identity=identity,
        builder_registry=builds.builder_registry,
        audit=audit,
        enrollment=enrollment,
        device_access=broker.access,
        metrics=_metrics(settings, storage, fleet, rollouts.rollouts, broker.link, clock),
        tunnel_sessions=sessions,
        service_upstream=upstream,
    )
    start_workers(runtime)
    return runtime


def _metrics(
    settings: ServerSettings,
    storage: Storage,
    fleet: FleetService,
    rollouts: RolloutService,
    link: MqttLink,
    clock: Callable[[], datetime],
) -> MetricsService:
    """What `/metrics` reads: grouped counts from the repositories, the rest from the running services."""
    repos = storage.repos
    sources = MetricsSources(
        repos.fleet,
        repos.rollouts,
        repos.builds,
        rollouts.current_gate_readings,
        fleet.ingest_counters,
        lambda: link.connected,
    )
    return MetricsService(sources, timedelta(seconds=settings.device_offline_after_s), clock, time.monotonic)


def start_workers(runtime: Runtime) -> None:
    """Broker accounts first (the link's first connect reconciles them), then the link, the builders, and the
    rollout executor last: everything it may wake is running by then."""
    runtime.device_access.start()
    runtime.fleet.start()  # the ingest writer, before the link hands it messages
    runtime.link.start()
    runtime.builders.start()
    runtime.executor.start()
    runtime.tunnel_sessions.start()  # closes what a previous run left open, then applies the timeouts
