"""The REST builder protocol (docs/builds.md "Builders"): claim, heartbeat, complete, fail; and who is building.

Remote build workers and agents acting as builders speak this (model_builds/remote_queue.py is the client).
Routes parse and hand over to `BuildQueueService`; a lost lease is a 409 telling the builder to stop.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import ValidationError

from control_plane.api.deps import BuildQueueDep, BuildsDep
from control_plane.api.schemas import BuilderOut, BuildOut, ClaimIn, FailIn, HeartbeatIn
from control_plane.domain.errors import InvalidInput
from model_builds.capabilities import BuilderInfo

router = APIRouter(tags=["builders"])


@router.post("/v1/builders/claim", response_model=None)
def claim(body: ClaimIn, queue: BuildQueueDep) -> dict[str, Any] | Response:
    try:
        info = BuilderInfo.from_dict(body.model_dump())
    except ValueError as exc:
        raise InvalidInput(f"kinds: {exc}") from exc
    task = queue.claim(info)
    return Response(status_code=204) if task is None else task


@router.post("/v1/builds/{build_id}/heartbeat")
def heartbeat(build_id: str, body: HeartbeatIn, queue: BuildQueueDep, builds: BuildsDep) -> BuildOut:
    queue.heartbeat(build_id, body.builder_id, body.message, body.progress)
    return BuildOut.of(builds.get_build(build_id))


@router.post("/v1/builds/{build_id}/complete")
def complete(
    build_id: str,
    queue: BuildQueueDep,
    builds: BuildsDep,
    artifact: Annotated[UploadFile, File(description="The built artifact.")],
    report: Annotated[str, Form(description="JSON: {parity, latency, toolchain, hardware, build_options}.")],
    builder_id: Annotated[str, Form(min_length=1, max_length=128)],
) -> BuildOut:
    queue.complete(build_id, builder_id, artifact.file, _report(report))
    return BuildOut.of(builds.get_build(build_id))


@router.post("/v1/builds/{build_id}/fail")
def fail(build_id: str, body: FailIn, queue: BuildQueueDep, builds: BuildsDep) -> BuildOut:
    queue.fail(build_id, body.builder_id, body.error)
    return BuildOut.of(builds.get_build(build_id))


@router.get("/v1/builders")
def list_builders(queue: BuildQueueDep) -> list[BuilderOut]:
    return [BuilderOut.of(r) for r in queue.builders()]


def _report(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
    except (ValueError, ValidationError) as exc:
        raise InvalidInput(f"report: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("report: expected a JSON object {parity, latency, toolchain, hardware, build_options}")
    return data
