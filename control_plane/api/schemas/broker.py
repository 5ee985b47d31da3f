"""Public schemas of devices' broker access (docs/security.md, "Broker identity"). A broker password appears in
exactly one answer: the one that issued it."""

from __future__ import annotations

from datetime import datetime

from pydantic import Field

from control_plane.api.schemas.base import Out
from control_plane.domain.broker_identity import BrokerAdmin
from control_plane.services.device_access import ReconcileOutcome


class BrokerCredentialOut(Out):
    device_id: str
    username: str = Field(description="The device's MQTT user name (agent.yaml mqtt.username).")
    client_id: str = Field(description="The only MQTT client id the broker accepts for it (the device id).")
    password: str = Field(description="Shown once: the control plane keeps no copy (agent.yaml mqtt.password).")


class RevocationOut(Out):
    device_id: str
    broker: BrokerAdmin = Field(
        description="dynsec: its broker client was deleted and its sessions disconnected; none: the broker is not "
        "administered by this control plane and was not told."
    )
    tokens_revoked: list[str] = Field(description="Ids of the device tokens revoked.")


class ReconcileOut(Out):
    administered: bool
    created: list[str] = Field(description="Device clients created without a password: issue them new credentials.")
    updated: list[str]
    deleted: list[str]
    roles_created: list[str]
    roles_updated: list[str]
    roles_deleted: list[str]
    default_access_set: bool
    own_client_updated: bool = Field(
        description="The control plane's own client was pinned; the broker disconnects it once for that."
    )


class BrokerOut(Out):
    admin: BrokerAdmin = Field(description="Who administers the broker's accounts (mqtt.admin).")
    last_reconcile_at: datetime | None
    last_reconcile: ReconcileOut | None
    last_error: str | None

    @classmethod
    def of(cls, admin: BrokerAdmin, outcome: ReconcileOutcome | None) -> BrokerOut:
        """Two values, not one: who administers the broker, and the latest reconcile (None: none yet)."""
        return cls(
            admin=admin,
            last_reconcile_at=outcome.at if outcome else None,
            last_reconcile=ReconcileOut.model_validate(outcome.report) if outcome and outcome.report else None,
            last_error=outcome.error if outcome else None,
        )
