"""The composition root: build the adapters and services from settings, start and stop them.

This is the only place that knows which adapter implements which port. It holds no request logic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from control_plane.adapters.artifacts import ArtifactStore
from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.playbook_run_repository import PlaybookRunRepository
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.db.rollout_repository import RolloutRepository
from control_plane.adapters.mqtt import MqttLink
from control_plane.adapters.playbook_runner import PlaybookRunner
from control_plane.adapters.signing_key import load_or_create_signer
from control_plane.adapters.training_local import LocalTrainingBackend
from control_plane.services.ansible_push import AnsiblePush
from control_plane.services.build_queue import BuildQueueService, QueueSettings
from control_plane.services.builds import BuildService
from control_plane.services.fleet import FleetService
from control_plane.services.local_builder import InProcessBuilders, in_process_ids
from control_plane.services.playbook_runs import PlaybookRunService
from control_plane.services.registry import RegistryService
from control_plane.services.rollout_executor import RolloutExecutor
from control_plane.services.rollouts import RolloutService
from control_plane.services.training import TrainingService
from control_plane.settings import AnsibleSettings, ServerSettings
from edge_agent.protocol import Signer, Topics
from model_builds.capabilities import BuilderInfo, detect_builder
from model_builds.catalog import load_catalog

log = logging.getLogger(__name__)


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Runtime:
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

    def close(self) -> None:
        self.builders.stop()
        self.executor.stop()
        self.playbook_runs.shutdown()
        self.link.stop()
        self.training.shutdown()
        self.dispose_database()


def start_runtime(
    settings: ServerSettings,
    clock: Callable[[], datetime] = utc_now,
    builder_info: Callable[[], BuilderInfo] = detect_builder,
) -> Runtime:
    """Create the data dir and signing key, migrate the database, wire the services, connect to the broker,
    re-queue the builds this control plane's own builders were running when it stopped, start the builders."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    signer = load_or_create_signer(settings.resolved_signing_key_file)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    registry_repo = RegistryRepository(engine)
    build_repo = BuildRepository(engine)
    fleet_repo = FleetRepository(engine)
    artifacts = ArtifactStore(settings.artifacts_dir)
    catalog = load_catalog(*([settings.targets_dir] if settings.targets_dir else []))
    topics = Topics(settings.mqtt.topic_prefix)

    registry = RegistryService(registry_repo, artifacts, clock, settings.max_upload_bytes)
    queue_settings = QueueSettings(
        base_url=settings.base_url,
        lease_s=settings.build_lease_s,
        builder_window_s=settings.builder_window_s,
        max_artifact_bytes=settings.max_upload_bytes,
    )
    build_queue = BuildQueueService(build_repo, registry_repo, artifacts, signer, clock, queue_settings)
    builds = BuildService(build_repo, registry_repo, artifacts, catalog, build_queue, clock)
    requeued = build_queue.recover(set(in_process_ids(16)))
    if requeued:
        log.warning("re-queued %d build(s) the previous control plane was running", requeued)
    builders = InProcessBuilders(
        build_queue, artifacts, settings.data_dir / "build-work", builder_info(), settings.build_workers
    )
    rollout_repo = RolloutRepository(engine)
    fleet = FleetService(
        fleet_repo, topics, clock, timedelta(seconds=settings.device_offline_after_s), rollouts=rollout_repo
    )
    link = MqttLink(settings.mqtt, on_message=fleet.handle_message)
    offline_after = timedelta(seconds=settings.device_offline_after_s)
    playbook_runs = PlaybookRunService(
        PlaybookRunRepository(engine),
        fleet_repo,
        PlaybookRunner(_ansible_settings(settings, signer), settings.playbook_runs_dir, clock),
        clock,
        fleet.accept_report,
        settings.ansible.workers,
    )
    # Devices on the Ansible channel get their desired states by deploy_model.yml; the push wakes the executor
    # when a run ends (the executor exists below; the push is only called once it runs).
    push = AnsiblePush(
        playbook_runs, fleet_repo, artifacts, settings.data_dir / "push-bundles", clock, lambda: executor.wake()
    )
    rollouts = RolloutService(
        fleet_repo,
        rollout_repo,
        registry_repo,
        build_repo,
        artifacts,
        catalog,
        signer,
        link,
        topics,
        clock,
        settings.base_url,
        offline_after,
        push,
    )
    link.set_connected_hook(rollouts.republish_all)
    # The executor runs rollouts on (and only on) its own thread; reports (over MQTT or handed back by a playbook),
    # telemetry and push results wake it.
    executor = RolloutExecutor(rollouts)
    fleet.on_report(executor.wake)
    interrupted = playbook_runs.recover()
    if interrupted:
        log.warning("marked %d playbook run(s) failed: %s", len(interrupted), "control plane restarted during the run")
    push.recover(interrupted)
    training = TrainingService(
        registry_repo, registry, LocalTrainingBackend(), clock, settings.data_dir / "jobs", settings.training_workers
    )
    failed = training.recover()
    if failed:
        log.warning("marked %d training job(s) failed: %s", failed, "control plane restarted during the job")
    link.start()
    builders.start()
    executor.start()
    return Runtime(
        settings,
        signer,
        registry,
        builds,
        build_queue,
        builders,
        fleet,
        rollouts,
        executor,
        training,
        link,
        engine.dispose,
        playbook_runs,
    )


def _ansible_settings(settings: ServerSettings, signer: Signer) -> AnsibleSettings:
    """Every playbook run knows where the control plane is and which key it signs with (provision.yml writes the
    key into agent.yaml); `ansible.vars` may override both."""
    defaults = {"edge_control_plane_url": settings.base_url, "edge_control_plane_public_key": signer.public_key_b64}
    return settings.ansible.model_copy(update={"vars": defaults | settings.ansible.vars})
