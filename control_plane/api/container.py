"""The composition root: build the adapters and services from settings, start and stop them.

This is the only place that knows which adapter implements which port. It holds no request logic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from control_plane.adapters.artifacts import ArtifactStore
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.mqtt import MqttLink
from control_plane.adapters.signing_key import load_or_create_signer
from control_plane.adapters.training_local import LocalTrainingBackend
from control_plane.services.builds import BuildService
from control_plane.services.fleet import FleetService
from control_plane.services.registry import RegistryService
from control_plane.services.rollouts import RolloutService
from control_plane.services.training import TrainingService
from control_plane.settings import ServerSettings
from edge_agent.protocol import Signer, Topics
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
    fleet: FleetService
    rollouts: RolloutService
    training: TrainingService
    link: MqttLink
    dispose_database: Callable[[], None]

    def close(self) -> None:
        self.link.stop()
        self.training.shutdown()
        self.dispose_database()


def start_runtime(settings: ServerSettings, clock: Callable[[], datetime] = utc_now) -> Runtime:
    """Create the data dir and signing key, migrate the database, wire the services, connect to the broker."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    signer = load_or_create_signer(settings.resolved_signing_key_file)
    engine = make_engine(settings.resolved_database_url)
    migrate(engine)
    registry_repo = RegistryRepository(engine)
    fleet_repo = FleetRepository(engine)
    artifacts = ArtifactStore(settings.artifacts_dir)
    catalog = load_catalog(*([settings.targets_dir] if settings.targets_dir else []))
    topics = Topics(settings.mqtt.topic_prefix)

    registry = RegistryService(registry_repo, artifacts, clock, settings.max_upload_bytes)
    builds = BuildService(registry_repo, artifacts, catalog, signer, clock)
    fleet = FleetService(fleet_repo, topics, clock, timedelta(seconds=settings.device_offline_after_s))
    link = MqttLink(settings.mqtt, on_message=fleet.handle_message)
    rollouts = RolloutService(fleet_repo, registry_repo, artifacts, signer, link, topics, clock, settings.base_url)
    link.set_connected_hook(rollouts.republish_all)
    fleet.on_report(rollouts.device_reported)
    training = TrainingService(
        registry_repo, registry, LocalTrainingBackend(), clock, settings.data_dir / "jobs", settings.training_workers
    )
    failed = training.recover()
    if failed:
        log.warning("marked %d training job(s) failed: %s", failed, "control plane restarted during the job")
    link.start()
    return Runtime(settings, signer, registry, builds, fleet, rollouts, training, link, engine.dispose)
