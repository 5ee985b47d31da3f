"""The control plane's MQTT link and the broker's per-device accounts (mqtt.admin: dynsec or none).

Nothing connects here: the link and the account reconciler start in start.py, after everything is wired.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from control_plane.adapters.broker_admin import RESPONSE_TOPIC, DynsecAccounts, UnadministeredBroker
from control_plane.adapters.mqtt import MqttLink
from control_plane.domain.broker_identity import BrokerAdmin
from control_plane.runtime.storage import Shared, Storage
from control_plane.services.device_access import DeviceAccessService
from control_plane.services.fleet import FleetService
from control_plane.services.identity import IdentityService
from control_plane.services.ports import BrokerAccounts
from control_plane.settings import Environment, ServerSettings
from edge_agent.protocol import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Broker:
    link: MqttLink  # not started yet
    access: DeviceAccessService  # not started yet


def wire_broker(
    settings: ServerSettings,
    storage: Storage,
    shared: Shared,
    fleet: FleetService,
    identity: IdentityService,
    clock: Callable[[], datetime],
) -> Broker:
    """The link hands every message to the fleet's ingest queue, and fetches devices' retained state again when
    that queue had to drop some; device access gives and takes broker accounts (and says who administers them, in
    the startup log)."""
    link = MqttLink(settings.mqtt, on_message=fleet.handle_message)
    fleet.set_resync(link.refetch_retained)
    accounts = broker_accounts(settings, link, shared.topics)
    access = DeviceAccessService(accounts, storage.repos.broker_accounts, fleet, identity, clock)
    log.log(admin_log_level(settings.environment, access.admin), "%s", access.describe())
    return Broker(link, access)


def broker_accounts(settings: ServerSettings, link: MqttLink, topics: Topics) -> BrokerAccounts:
    """The dynamic-security plugin, reached through the control plane's own MQTT link, or nobody (mqtt.admin)."""
    mqtt = settings.mqtt
    if mqtt.admin is not BrokerAdmin.DYNSEC or mqtt.username is None:
        return UnadministeredBroker()
    accounts = DynsecAccounts(
        link, topics, mqtt.username, mqtt.client_id, mqtt.admin_timeout_s, mqtt.admin_keep_clients
    )
    link.route(RESPONSE_TOPIC, accounts.on_response)
    return accounts


def admin_log_level(environment: Environment, admin: BrokerAdmin) -> int:
    """An unadministered broker in production is worth a warning: revoking a device does not reach it."""
    unadministered = admin is BrokerAdmin.NONE
    return logging.WARNING if unadministered and environment is Environment.PRODUCTION else logging.INFO
