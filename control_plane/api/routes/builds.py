"""Builds of a version: queue them (202; builders do the work), list and show them, their logs, calibration sets."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, UploadFile
from fastapi.responses import PlainTextResponse

from control_plane.api.deps import BuildsDep, PrincipalDep, RegistryDep
from control_plane.api.params import Version
from control_plane.api.schemas.builds import BuildOut, BuildRequest, BuildsCreatedOut, CalibrationOut, SkippedOut
from control_plane.services.builds import BuildRequestSpec

router = APIRouter(tags=["builds"])


@router.post("/v1/models/{name}/versions/{version}/builds", status_code=202)
def create_builds(name: str, version: Version, request: BuildRequest, builds: BuildsDep) -> BuildsCreatedOut:
    spec = BuildRequestSpec(
        targets=request.targets,
        kinds=request.kinds,
        precisions=request.precisions,
        options=request.options.model_dump(mode="json") if request.options else {},
        calibration=request.calibration,
    )
    outcome = builds.request(name, version, spec)
    return BuildsCreatedOut(
        builds=[BuildOut.model_validate(b) for b in outcome.builds],
        skipped=[SkippedOut.model_validate(s) for s in outcome.skipped],
        targets=outcome.targets,
        targets_from_fleet=outcome.targets_from_fleet,
    )


@router.get("/v1/models/{name}/versions/{version}/builds")
def list_builds(name: str, version: Version, builds: BuildsDep) -> list[BuildOut]:
    return [BuildOut.model_validate(b) for b in builds.list_builds(name, version)]


@router.post("/v1/models/{name}/versions/{version}/calibration", status_code=201)
def upload_calibration(
    name: str,
    version: Version,
    registry: RegistryDep,
    file: Annotated[UploadFile, File(description="Calibration inputs (.npz: `input:NAME` or NAME arrays).")],
) -> CalibrationOut:
    found = registry.add_calibration(name, version, file.file)
    return CalibrationOut.model_validate(found)


@router.get("/v1/builds/{build_id}")
def get_build(build_id: str, builds: BuildsDep) -> BuildOut:
    return BuildOut.model_validate(builds.get_build(build_id))


@router.post("/v1/builds/{build_id}/cancel")
def cancel_build(build_id: str, principal: PrincipalDep, builds: BuildsDep) -> BuildOut:
    """A queued, waiting or running build becomes `cancelled`; its builder is told to stop at its next call."""
    return BuildOut.model_validate(builds.cancel(build_id, principal))


@router.get("/v1/builds/{build_id}/logs", response_class=PlainTextResponse)
def build_logs(build_id: str, builds: BuildsDep) -> PlainTextResponse:
    return PlainTextResponse(builds.logs(build_id))
