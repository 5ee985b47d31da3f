"""The composition root: build the adapters and services from settings, start and stop them.

This is the only place that knows which adapter implements which port. It holds no request logic.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from control_plane.adapters.artifacts import ArtifactStore
from control_plane.adapters.broker_admin import RESPONSE_TOPIC, DynsecAccounts, UnadministeredBroker
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
from control_plane.adapters.mqtt import MqttLink
from control_plane.adapters.oidc import OidcVerifier
from control_plane.adapters.playbook_runner import PlaybookRunner
from control_plane.adapters.private_files import write_private
from control_plane.adapters.signing_key import load_or_create_signer
from control_plane.adapters.training_local import LocalTrainingBackend
from control_plane.domain.broker_identity import BrokerAdmin
from control_plane.domain.rates import RatePolicy
from control_plane.services.ansible_push import AnsiblePush
from control_plane.services.audit import AuditService
from control_plane.services.build_queue import BuildQueueService, QueueSettings
from control_plane.services.builder_registry import BuilderRegistryService
from control_plane.services.builds import BuildService
from control_plane.services.device_access import BrokerProvisioning, DeviceAccessService
from control_plane.services.enrollment import EnrollmentService, IdentityPolicy
from control_plane.services.fleet import FleetService, MessageLimits
from control_plane.services.identity import IdentityService
from control_plane.services.local_builder import InProcessBuilders, builtin_principal, builtin_registration
from control_plane.services.playbook_runs import PlaybookRunService
from control_plane.services.ports import BrokerAccounts
from control_plane.services.registry import RegistryService
from control_plane.services.reproof import ReProver
from control_plane.services.rollout_executor import RolloutExecutor
from control_plane.services.rollouts import RolloutService
from control_plane.services.training import TrainingService
from control_plane.settings import AnsibleSettings, Environment, ServerSettings
from edge_agent.protocol import Signer, Topics
from model_builds.capabilities import BuilderInfo, detect_builder
from model_builds.catalog import load_catalog
from model_builds.npz import NpzLimits
from model_builds.ort_sandbox import EvalLimits, run_bounded

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
    identity: IdentityService
    builder_registry: BuilderRegistryService
    audit: AuditService
    enrollment: EnrollmentService
    device_access: DeviceAccessService

    def close(self) -> None:
        self.builders.stop()
        self.executor.stop()
        self.playbook_runs.shutdown()
        self.device_access.stop()
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
    identity = _identity(settings, TokenRepository(engine), clock)
    registry_repo = RegistryRepository(engine)
    build_repo = BuildRepository(engine)
    fleet_repo = FleetRepository(engine, events_kept=settings.device_events_kept)
    artifacts = ArtifactStore(settings.artifacts_dir)
    catalog = load_catalog(*([settings.targets_dir] if settings.targets_dir else []))
    topics = Topics(settings.mqtt.topic_prefix)

    evaluation = EvalLimits(
        timeout_s=settings.model_eval_timeout_s,
        memory_bytes=settings.model_eval_memory_bytes,
        long_timeout_s=settings.build_eval_timeout_s,
    )
    registry = RegistryService(
        registry_repo,
        artifacts,
        clock,
        settings.max_upload_bytes,
        npz_limits=NpzLimits(max_total_bytes=settings.max_npz_bytes, max_members=settings.max_npz_members),
        evaluation=evaluation,
    )
    queue_settings = QueueSettings(
        base_url=settings.base_url,
        lease_s=settings.build_lease_s,
        builder_window_s=settings.builder_window_s,
        max_artifact_bytes=settings.max_upload_bytes,
        reproof_timeout_s=settings.model_eval_timeout_s,
    )
    # Every ONNX artifact a builder delivers is re-proved here, in the bounded sandbox (docs/builds.md).
    reprover = ReProver(
        artifacts,
        functools.partial(
            run_bounded, timeout_s=settings.model_eval_timeout_s, memory_bytes=settings.model_eval_memory_bytes
        ),
    )
    build_queue = BuildQueueService(build_repo, registry_repo, artifacts, signer, clock, queue_settings, reprover)
    builds = BuildService(build_repo, registry_repo, artifacts, catalog, build_queue, clock)
    builder_registry = BuilderRegistryService(build_repo, identity, catalog, clock)
    own_builder = builtin_principal()
    requeued = build_queue.recover({own_builder.subject})
    if requeued:
        log.warning("re-queued %d build(s) the previous control plane was running", requeued)
    own_info = builder_info()
    own_plans = builtin_registration(own_builder, own_info, clock())
    if own_plans is not None and settings.build_workers:
        build_queue.trust_builtin(own_plans)
    builders = InProcessBuilders(
        build_queue,
        artifacts,
        settings.data_dir / "build-work",
        own_info,
        settings.build_workers,
        own_builder,
        evaluation,
    )
    rollout_repo = RolloutRepository(engine)
    fleet = FleetService(
        fleet_repo,
        topics,
        clock,
        timedelta(seconds=settings.device_offline_after_s),
        rollouts=rollout_repo,
        limits=MessageLimits(RatePolicy(settings.device_messages_per_s, settings.device_message_burst)),
    )
    link = MqttLink(settings.mqtt, on_message=fleet.handle_message)
    device_access = DeviceAccessService(
        _broker_accounts(settings, link, topics), BrokerAccountRepository(engine), fleet, identity, clock
    )
    log.log(_admin_log_level(settings, device_access), "%s", device_access.describe())
    enrollment = _enrollment(
        settings, EnrollmentRepository(engine), fleet_repo, identity, signer, clock, device_access.provisioning()
    )
    offline_after = timedelta(seconds=settings.device_offline_after_s)
    playbook_runner = PlaybookRunner(_ansible_settings(settings, signer), settings.playbook_runs_dir, clock)
    playbook_runs = PlaybookRunService(
        PlaybookRunRepository(engine),
        fleet_repo,
        playbook_runner,
        clock,
        fleet.accept_report,
        settings.ansible.workers,
        declared_vars=playbook_runner.declared_vars(),  # playbooks/api_vars.yml: what a request may set
        run_tokens=identity,  # provision enrolls and decommission forgets with a token of the run's own
        run_token_lifetime=timedelta(seconds=settings.ansible.timeout_s + 300),
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

    def on_broker_connected() -> None:
        device_access.reconcile_soon()  # first: it may pin the control plane's own client (a reconnect follows)
        rollouts.republish_all()

    link.set_connected_hook(on_broker_connected)
    # The executor runs rollouts on (and only on) its own thread; reports (over MQTT or handed back by a playbook),
    # telemetry and push results wake it.
    executor = RolloutExecutor(rollouts)
    fleet.on_report(executor.wake)
    interrupted = playbook_runs.recover()
    if interrupted:
        log.warning("marked %d playbook run(s) failed: %s", len(interrupted), "control plane restarted during the run")
    push.recover(interrupted)
    training = TrainingService(
        registry_repo,
        registry,
        LocalTrainingBackend(),
        clock,
        settings.data_dir / "jobs",
        settings.training_workers,
        code_dirs=settings.training.code_dirs,
        data_dirs=settings.training.data_dirs,
    )
    failed = training.recover()
    if failed:
        log.warning("marked %d training job(s) failed: %s", failed, "control plane restarted during the job")
    device_access.start()
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
        identity,
        builder_registry,
        AuditService(AuditRepository(engine), clock),
        enrollment=enrollment,
        device_access=device_access,
    )


def _identity(settings: ServerSettings, tokens: TokenRepository, clock: Callable[[], datetime]) -> IdentityService:
    """Tokens, and single sign-on when configured; on first start the first admin token (docs/security.md)."""
    oidc = OidcVerifier(settings.oidc) if settings.oidc.enabled else None
    identity = IdentityService(tokens, clock, jwt=oidc, claim_roles=oidc)
    given = settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else None
    created = identity.bootstrap(given)
    if created is not None:
        write_private(settings.admin_token_file, created + "\n")
        log.warning(
            "first start: wrote an admin token to %s (mode 0600); `edgectl login` takes it", "data_dir/admin-token"
        )
    return identity


def _enrollment(
    settings: ServerSettings,
    store: EnrollmentRepository,
    fleet: FleetRepository,
    identity: IdentityService,
    signer: Signer,
    clock: Callable[[], datetime],
    broker: BrokerProvisioning | None,
) -> EnrollmentService:
    """Devices enroll with an enrollment token and get their identity (docs/security.md, Devices). The broker
    password an approved device receives is given to the broker through `broker` (the per-device broker accounts
    of issue 9, item 6) when there is one; without it whoever runs the broker provisions it."""
    policy = IdentityPolicy(
        control_plane_public_key=signer.public_key_b64,
        mqtt_host=settings.enrollment.broker_host or settings.mqtt.host,
        mqtt_port=settings.enrollment.broker_port or settings.mqtt.port,
        topic_prefix=settings.mqtt.topic_prefix,
        retry_after_s=settings.enrollment.retry_after_s,
        broker_ca_pem=settings.mqtt.tls_ca_file.read_text() if settings.mqtt.tls_ca_file else None,
    )
    return EnrollmentService(store, fleet, identity, policy, clock, broker=broker)


def _broker_accounts(settings: ServerSettings, link: MqttLink, topics: Topics) -> BrokerAccounts:
    """The dynamic-security plugin, reached through the control plane's own MQTT link, or nobody (mqtt.admin)."""
    mqtt = settings.mqtt
    if mqtt.admin is not BrokerAdmin.DYNSEC or mqtt.username is None:
        return UnadministeredBroker()
    accounts = DynsecAccounts(
        link, topics, mqtt.username, mqtt.client_id, mqtt.admin_timeout_s, mqtt.admin_keep_clients
    )
    link.route(RESPONSE_TOPIC, accounts.on_response)
    return accounts


def _admin_log_level(settings: ServerSettings, access: DeviceAccessService) -> int:
    """An unadministered broker in production is worth a warning: revoking a device does not reach it."""
    unadministered = access.admin is BrokerAdmin.NONE
    return logging.WARNING if unadministered and settings.environment is Environment.PRODUCTION else logging.INFO


def _ansible_settings(settings: ServerSettings, signer: Signer) -> AnsibleSettings:
    """Every playbook run knows where the control plane is and which key it signs with (provision.yml writes the
    key into agent.yaml); `ansible.vars` may override both."""
    defaults = {"edge_control_plane_url": settings.base_url, "edge_control_plane_public_key": signer.public_key_b64}
    return settings.ansible.model_copy(update={"vars": defaults | settings.ansible.vars})
