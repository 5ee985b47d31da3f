"""Who may call the control plane: operators' tokens (and single sign-on), and devices' enrollment.

On first start it writes the first admin token (docs/security.md); it never logs a secret, only where it is.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from control_plane.adapters.db.identity_repository import TokenRepository
from control_plane.adapters.oidc import OidcVerifier
from control_plane.adapters.private_files import write_private
from control_plane.runtime.storage import Storage
from control_plane.services.device_access import BrokerProvisioning
from control_plane.services.enrollment import EnrollmentService, IdentityPolicy
from control_plane.services.identity import IdentityService
from control_plane.settings import ServerSettings
from edge_agent.protocol import Signer

log = logging.getLogger(__name__)


def operator_identity(
    settings: ServerSettings, tokens: TokenRepository, clock: Callable[[], datetime]
) -> IdentityService:
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


def device_enrollment(
    settings: ServerSettings,
    storage: Storage,
    identity: IdentityService,
    clock: Callable[[], datetime],
    broker: BrokerProvisioning | None,
) -> EnrollmentService:
    """Devices enroll with an enrollment token and get their identity (docs/security.md, Devices). The broker
    password an approved device receives is given to the broker through `broker` (the per-device broker accounts
    of issue 9, item 6) when there is one; without it whoever runs the broker provisions it."""
    policy = identity_policy(settings, storage.signer)
    return EnrollmentService(storage.repos.enrollment, storage.repos.fleet, identity, policy, clock, broker=broker)


def identity_policy(settings: ServerSettings, signer: Signer) -> IdentityPolicy:
    """What an approved device is told: the key desired states are signed with, where its broker is
    (`enrollment.broker_*` when devices reach it by another address than the control plane does), and where the
    tunnel gateway is with its host key (`tunnel.public_host`; the key is created now if the gateway has not yet)."""
    tunnel = None
    if settings.tunnel.public_host is not None:
        from control_plane.runtime.tunnels import announced_gateway  # late: asyncssh only when a gateway is announced

        tunnel = announced_gateway(settings)
    return IdentityPolicy(
        control_plane_public_key=signer.public_key_b64,
        mqtt_host=settings.enrollment.broker_host or settings.mqtt.host,
        mqtt_port=settings.enrollment.broker_port or settings.mqtt.port,
        topic_prefix=settings.mqtt.topic_prefix,
        retry_after_s=settings.enrollment.retry_after_s,
        broker_ca_pem=settings.mqtt.tls_ca_file.read_text() if settings.mqtt.tls_ca_file else None,
        tunnel=tunnel,
    )
