"""Health and status, the signing key, the target catalog, and artifact downloads (HTTP Range honoured).

`/healthz` tells the truth: a control plane that cannot reach its broker answers 503 `degraded`, naming the broker
and since when (load balancers and `edgectl status` act on it); it never answers 200 while devices are cut off."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import FileResponse, JSONResponse

from control_plane.api.deps import BuildsDep, RegistryDep, RuntimeDep
from control_plane.api.schemas.system import HealthOut, IngestOut, SigningKeyOut, StatusOut, target_out

router = APIRouter()


@router.get(
    "/healthz",
    tags=["system"],
    response_model=HealthOut,
    response_model_exclude_none=True,
    responses={503: {"model": HealthOut, "description": "Degraded: the broker is unreachable (which, since when)."}},
)
def healthz(runtime: RuntimeDep) -> HealthOut | JSONResponse:
    """200 `{"status": "ok", "mqtt_connected": true}`; 503 with `status: degraded`, the broker and since when while
    the control plane cannot reach its broker (devices get no desired states and nothing they report arrives)."""
    link = runtime.link
    if link.connected:
        return HealthOut(status="ok", mqtt_connected=True)
    since = link.down_since.replace(microsecond=0) if link.down_since else None
    degraded = HealthOut(
        status="degraded",
        mqtt_connected=False,
        broker=link.broker,
        since=since,
        reason=f"broker {link.broker} unreachable" + (f" since {since.isoformat(timespec='seconds')}" if since else ""),
    )
    return JSONResponse(degraded.model_dump(mode="json", exclude_none=True), status_code=503)


@router.get("/v1/status", tags=["system"])
def status(runtime: RuntimeDep) -> StatusOut:
    """Health, and what the ingest queue did: messages received, waiting, dropped, batches, resyncs."""
    link = runtime.link
    ingest = IngestOut.model_validate(runtime.fleet.ingest_counters())
    return StatusOut(
        status="ok" if link.connected else "degraded",
        mqtt_connected=link.connected,
        mqtt_protocol=link.protocol_in_use,
        ingest=ingest,
    )


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
