"""Devices' broker access: credentials issued once, revocation, and the broker's accounts reconciled on demand."""

from __future__ import annotations

from fastapi import APIRouter

from control_plane.api.deps import DeviceAccessDep, PrincipalDep
from control_plane.api.schemas.broker import BrokerCredentialOut, BrokerOut, ReconcileOut, RevocationOut

router = APIRouter(tags=["devices"])


@router.post("/v1/devices/{device_id}/broker-credentials", status_code=201)
def issue_credentials(device_id: str, principal: PrincipalDep, access: DeviceAccessDep) -> BrokerCredentialOut:
    """New MQTT credentials for an enrolled device (its password is in this answer only); replaces any it had and
    disconnects its current session. 409 when the control plane does not administer the broker (mqtt.admin)."""
    return BrokerCredentialOut.model_validate(access.issue_credentials(device_id, principal.subject))


@router.post("/v1/devices/{device_id}/revoke")
def revoke(device_id: str, access: DeviceAccessDep) -> RevocationOut:
    """Revoke the device: its broker client is deleted (its session drops at once, its next login is refused) and
    its device tokens are revoked. The device stays in the fleet. 503 when the broker could not be told (the rest
    is done; the next reconcile deletes the client)."""
    return RevocationOut.model_validate(access.revoke(device_id))


@router.get("/v1/broker", tags=["broker"])
def broker(access: DeviceAccessDep) -> BrokerOut:
    """Who administers the broker's accounts, and the latest reconcile."""
    return BrokerOut.of(access.admin, access.last_reconcile)


@router.post("/v1/broker/reconcile", tags=["broker"])
def reconcile(access: DeviceAccessDep) -> ReconcileOut:
    """Make the broker's clients equal the control plane's own and the active devices' (deleting any other)."""
    return ReconcileOut.model_validate(access.reconcile())
