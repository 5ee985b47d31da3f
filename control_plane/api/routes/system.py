"""Health and status, the signing key, the target catalog, and artifact downloads (HTTP Range honoured)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse

from control_plane.api.deps import BuildsDep, RegistryDep, RuntimeDep
from control_plane.api.schemas.system import HealthOut, IngestOut, SigningKeyOut, StatusOut, target_out

router = APIRouter()


@router.get("/healthz", tags=["system"])
def healthz(runtime: RuntimeDep) -> HealthOut:
    return HealthOut(status="ok", mqtt_connected=runtime.link.connected)


@router.get("/v1/status", tags=["system"])
def status(runtime: RuntimeDep) -> StatusOut:
    """Health, and what the ingest queue did: messages received, waiting, dropped, batches, resyncs."""
    link = runtime.link
    ingest = IngestOut.model_validate(runtime.fleet.ingest_counters())
    return StatusOut(status="ok", mqtt_connected=link.connected, mqtt_protocol=link.protocol_in_use, ingest=ingest)


@router.get("/v1/keys/signing", tags=["system"])
def signing_key(runtime: RuntimeDep) -> SigningKeyOut:
    return SigningKeyOut(algorithm="ed25519", key_id=runtime.signer.key_id, public_key=runtime.signer.public_key_b64)


@router.get("/v1/targets", tags=["builds"])
def targets(builds: BuildsDep) -> list[dict[str, Any]]:
    return [target_out(t) for t in builds.targets()]


@router.get("/v1/artifacts/{sha256}", tags=["artifacts"], response_class=FileResponse)
def artifact(sha256: str, registry: RegistryDep) -> FileResponse:
    path = registry.artifact_file(sha256)
    return FileResponse(path, media_type="application/octet-stream", filename=sha256)
