"""What the tunnel gateway reads of the control plane's records: each device's enrolled key and whether its access
is revoked, for a batch of device ids in one query.

Read only: the gateway never writes the control plane's tables (enrollment, rotation and revocation stay with the
control plane's API). One query per batch of at most `BATCH` ids, so a recheck of N open tunnels costs N / BATCH
queries, never one per device and never a scan of the fleet.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import Engine, select
from sqlalchemy.orm import sessionmaker

from control_plane.adapters.db.tables import BrokerAccountRow, DeviceEnrollmentRow, DeviceRow
from control_plane.domain.tunnels import Admission

BATCH = 500


class TunnelAdmissionRepository:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)

    def admissions(self, device_ids: Iterable[str]) -> dict[str, Admission]:
        """The admission of each known device among `device_ids`; a device the fleet does not know is absent."""
        ids = sorted(set(device_ids))
        found: dict[str, Admission] = {}
        with self._sessions() as session:
            for start in range(0, len(ids), BATCH):
                chunk = ids[start : start + BATCH]
                stmt = (
                    select(DeviceRow.id, DeviceEnrollmentRow.public_key, BrokerAccountRow.active)
                    .outerjoin(DeviceEnrollmentRow, DeviceEnrollmentRow.device_id == DeviceRow.id)
                    .outerjoin(BrokerAccountRow, BrokerAccountRow.device_id == DeviceRow.id)
                    .where(DeviceRow.id.in_(chunk))
                )
                for device_id, public_key, active in session.execute(stmt):
                    # No broker account at all (mqtt.admin: none, or enrolled by an operator) is not a revocation.
                    found[device_id] = Admission(device_id, public_key, revoked=active is False)
        return found
