"""The REST builder protocol (docs/builds.md "Builders"): claim, heartbeat, complete, fail; who is building; and
the registration of builders by an administrator.

Remote build workers and agents acting as builders speak this (model_builds/remote_queue.py is the client), each
with its own `builder` token: the lease belongs to the token's identity (`PrincipalDep`), never to the
`builder_id` label in a body. Routes parse and hand over to `BuildQueueService`; a lost lease is a 409 telling the
builder to stop.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, File, Form, Response, UploadFile
from pydantic import ValidationError

from control_plane.api.builder_schemas import BuilderRegistrationIn, RegisteredBuilderOut
from control_plane.api.deps import BuilderRegistryDep, BuildQueueDep, BuildsDep, PrincipalDep
from control_plane.api.schemas.builders import BuilderOut
from control_plane.api.schemas.builds import BuildOut
from control_plane.domain.errors import InvalidInput
from edge_agent.protocol.validation import describe_error
from model_builds.protocol import BuilderClaim, BuildFailure, BuildHeartbeat, BuildReport

router = APIRouter(tags=["builders"])


@router.post("/v1/builders/claim", response_model=None)
def claim(body: BuilderClaim, principal: PrincipalDep, queue: BuildQueueDep) -> dict[str, Any] | Response:
    try:
        info = body.info(default_label=principal.name)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise InvalidInput(f"{describe_error(first)}, not {first.get('input')!r}") from exc
    task = queue.claim(principal, info)
    return Response(status_code=204) if task is None else task.model_dump(mode="json")


@router.post("/v1/builds/{build_id}/heartbeat")
def heartbeat(
    build_id: str, body: BuildHeartbeat, principal: PrincipalDep, queue: BuildQueueDep, builds: BuildsDep
) -> BuildOut:
    queue.heartbeat(build_id, principal, body.message, body.progress)
    return BuildOut.model_validate(builds.get_build(build_id))


@router.post("/v1/builds/{build_id}/complete")
def complete(
    build_id: str,
    principal: PrincipalDep,
    queue: BuildQueueDep,
    builds: BuildsDep,
    artifact: Annotated[UploadFile, File(description="The built artifact.")],
    report: Annotated[str, Form(description="JSON: {parity, latency, toolchain, hardware, build_options}.")],
    builder_id: Annotated[str | None, Form(max_length=128, description="Ignored: the token says who calls.")] = None,
) -> BuildOut:
    queue.complete(build_id, principal, artifact.file, _report(report))
    return BuildOut.model_validate(builds.get_build(build_id))


@router.post("/v1/builds/{build_id}/fail")
def fail(
    build_id: str, body: BuildFailure, principal: PrincipalDep, queue: BuildQueueDep, builds: BuildsDep
) -> BuildOut:
    queue.fail(build_id, principal, body.error)
    return BuildOut.model_validate(builds.get_build(build_id))


@router.get("/v1/builders")
def list_builders(queue: BuildQueueDep) -> list[BuilderOut]:
    return [BuilderOut.model_validate(r) for r in queue.builders()]


@router.post("/v1/builders", status_code=201)
def register_builder(
    body: BuilderRegistrationIn, principal: PrincipalDep, registry: BuilderRegistryDep
) -> RegisteredBuilderOut:
    """A builder identity for GPU hardware (its TensorRT plans are accepted); its token is in this answer only."""
    registered = registry.register(body.name, body.compute_capability, body.tensorrt, body.gpu_class, principal)
    return RegisteredBuilderOut.created(registered)


def _report(text: str) -> BuildReport:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"report: not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise InvalidInput("report: expected a JSON object {parity, latency, toolchain, hardware, build_options}")
    try:
        return BuildReport.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(f"report: {describe_error(exc.errors()[0])}") from exc
