"""The parts every service stands on: the data dir, the signing key, the migrated database and its repositories,
the artifact store, the GPU-class catalog and the MQTT topics.

Opening them starts no thread and talks to no broker; nothing here decides anything about a request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from control_plane.adapters.artifacts import ArtifactStore
from control_plane.adapters.db.audit_repository import AuditRepository
from control_plane.adapters.db.broker_account_repository import BrokerAccountRepository
from control_plane.adapters.db.build_repository import BuildRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.enrollment_repository import EnrollmentRepository
from control_plane.adapters.db.fleet_repository import FleetRepository
from control_plane.adapters.db.identity_repository import TokenRepository
from control_plane.adapters.db.playbook_run_repository import PlaybookRunRepository
from control_plane.adapters.db.registry_repository import RegistryRepository
from control_plane.adapters.db.rollout_repository import RolloutRepository
from control_plane.adapters.db.tunnel_repository import TunnelAdmissionRepository
from control_plane.adapters.db.tunnel_session_repository import TunnelSessionRepository
from control_plane.adapters.signing_key import load_or_create_signer
from control_plane.settings import ServerSettings
from edge_agent.protocol import Signer, Topics
from model_builds.catalog import Catalog, load_catalog

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Repositories:
    """One repository per table group, all on the same engine."""

    tokens: TokenRepository
    registry: RegistryRepository
    builds: BuildRepository
    fleet: FleetRepository
    rollouts: RolloutRepository
    broker_accounts: BrokerAccountRepository
    enrollment: EnrollmentRepository
    playbook_runs: PlaybookRunRepository
    audit: AuditRepository
    tunnel_sessions: TunnelSessionRepository
    tunnel_admissions: TunnelAdmissionRepository


@dataclass(frozen=True)
class Storage:
    signer: Signer
    repos: Repositories
    dispose_database: Callable[[], None]


@dataclass(frozen=True)
class Shared:
    """What builds, the fleet and rollouts share."""

    artifacts: ArtifactStore
    catalog: Catalog
    topics: Topics


def open_storage(settings: ServerSettings) -> Storage:
    """Create the data dir and the signing key (first start), migrate the database to head."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    signer = load_or_create_signer(settings.resolved_signing_key_file)
    engine = make_engine(settings.resolved_database_url)
    log.info("database: %s", settings.database_shown)
    migrate(engine)
    repos = Repositories(
        tokens=TokenRepository(engine),
        registry=RegistryRepository(engine),
        builds=BuildRepository(engine),
        fleet=FleetRepository(engine, events_kept=settings.device_events_kept),
        rollouts=RolloutRepository(engine),
        broker_accounts=BrokerAccountRepository(engine),
        enrollment=EnrollmentRepository(engine),
        playbook_runs=PlaybookRunRepository(engine),
        audit=AuditRepository(engine),
        tunnel_sessions=TunnelSessionRepository(engine),
        tunnel_admissions=TunnelAdmissionRepository(engine),
    )
    return Storage(signer, repos, engine.dispose)


def open_shared(settings: ServerSettings) -> Shared:
    """The artifact store, the built-in GPU classes plus `targets_dir`'s (a bad file refuses the start), topics."""
    return Shared(
        artifacts=ArtifactStore(settings.artifacts_dir),
        catalog=load_catalog(*([settings.targets_dir] if settings.targets_dir else [])),
        topics=Topics(settings.mqtt.topic_prefix),
    )
