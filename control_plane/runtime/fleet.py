"""The fleet (devices and their reports) and rollouts: the rollout service, its executor, the Ansible push, and
the broker reconnect that republishes every desired state.

The executor is made here and started in start.py; no rollout decision lives here (domain/rollouts.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from control_plane.domain.rates import RatePolicy
from control_plane.runtime.broker import Broker
from control_plane.runtime.storage import Shared, Storage
from control_plane.services.ansible_push import AnsiblePush
from control_plane.services.device_access import DeviceAccessService
from control_plane.services.fleet import FleetService, MessageLimits
from control_plane.services.ingest import IngestLimits
from control_plane.services.playbook_runs import PlaybookRunService
from control_plane.services.rollout_executor import RolloutExecutor
from control_plane.services.rollouts import RolloutService
from control_plane.settings import ServerSettings


@dataclass(frozen=True)
class RolloutParts:
    rollouts: RolloutService
    executor: RolloutExecutor  # not started yet
    push: AnsiblePush


def fleet_service(
    settings: ServerSettings, storage: Storage, shared: Shared, clock: Callable[[], datetime]
) -> FleetService:
    """Device reports and telemetry, each device held to its message rate, applied in batches from the ingest queue
    (its writer starts with the other workers in start.py)."""
    mqtt = settings.mqtt
    return FleetService(
        storage.repos.fleet,
        shared.topics,
        clock,
        timedelta(seconds=settings.device_offline_after_s),
        rollouts=storage.repos.rollouts,
        limits=MessageLimits(RatePolicy(settings.device_messages_per_s, settings.device_message_burst)),
        ingest=IngestLimits(mqtt.ingest_queue, mqtt.ingest_queue_bytes, mqtt.ingest_batch),
    )


def wire_rollouts(
    settings: ServerSettings,
    storage: Storage,
    shared: Shared,
    fleet: FleetService,
    broker: Broker,
    playbook_runs: PlaybookRunService,
    clock: Callable[[], datetime],
) -> RolloutParts:
    repos = storage.repos
    # Devices on the Ansible channel get their desired states by deploy_model.yml; the push wakes the executor
    # when a run ends (the executor exists below; the push is only called once it runs).
    push = AnsiblePush(
        playbook_runs, repos.fleet, shared.artifacts, settings.data_dir / "push-bundles", clock, lambda: executor.wake()
    )
    rollouts = RolloutService(
        repos.fleet,
        repos.rollouts,
        repos.registry,
        repos.builds,
        shared.artifacts,
        shared.catalog,
        storage.signer,
        broker.link,
        shared.topics,
        clock,
        settings.base_url,
        timedelta(seconds=settings.device_offline_after_s),
        push,
    )
    # The executor runs rollouts on (and only on) its own thread; reports (over MQTT or handed back by a playbook)
    # and telemetry wake it with the devices that changed, a push's end with none (every open rollout runs). It
    # also republishes every desired state when the broker link comes up (not on paho's network thread).
    executor = RolloutExecutor(rollouts)
    broker.link.set_connected_hook(lambda: on_broker_connected(broker.access, executor))
    fleet.on_report(executor.wake)
    return RolloutParts(rollouts, executor, push)


def on_broker_connected(access: DeviceAccessService, executor: RolloutExecutor) -> None:
    """At every (re)connect: reconcile broker accounts first (it may pin the control plane's own client, and a
    reconnect follows), then have the executor republish every device's desired state."""
    access.reconcile_soon()
    executor.republish_soon()
