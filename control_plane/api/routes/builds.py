"""Builds of a version for GPU classes (synchronous, run in a worker thread), and build lookups."""

from __future__ import annotations

from fastapi import APIRouter

from control_plane.api.deps import BuildsDep
from control_plane.api.schemas import BuildOut, BuildRequest

router = APIRouter(tags=["builds"])


@router.post("/v1/models/{name}/versions/{version}/builds", status_code=201)
def create_builds(name: str, version: int, request: BuildRequest, builds: BuildsDep) -> list[BuildOut]:
    return [BuildOut.of(b) for b in builds.build(name, version, request.targets, request.precision)]


@router.get("/v1/models/{name}/versions/{version}/builds")
def list_builds(name: str, version: int, builds: BuildsDep) -> list[BuildOut]:
    return [BuildOut.of(b) for b in builds.list_builds(name, version)]


@router.get("/v1/builds/{build_id}")
def get_build(build_id: str, builds: BuildsDep) -> BuildOut:
    return BuildOut.of(builds.get_build(build_id))
