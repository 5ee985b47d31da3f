"""FastAPI dependency aliases: a route names what it needs (`registry: RegistryDep`), never how it is built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends
from starlette.requests import HTTPConnection

from control_plane.api.auth import principal_of
from control_plane.domain.identity import Principal
from control_plane.runtime import Runtime
from control_plane.services.audit import AuditService
from control_plane.services.build_queue import BuildQueueService
from control_plane.services.builder_registry import BuilderRegistryService
from control_plane.services.builds import BuildService
from control_plane.services.device_access import DeviceAccessService
from control_plane.services.enrollment import EnrollmentService
from control_plane.services.fleet import FleetService
from control_plane.services.identity import IdentityService
from control_plane.services.playbook_runs import PlaybookRunService
from control_plane.services.registry import RegistryService
from control_plane.services.rollouts import RolloutService
from control_plane.services.training import TrainingService
from control_plane.services.tunnel_sessions import ServiceUpstream, TunnelSessionService


def get_runtime(request: HTTPConnection) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _registry(request: HTTPConnection) -> RegistryService:
    return get_runtime(request).registry


def _builds(request: HTTPConnection) -> BuildService:
    return get_runtime(request).builds


def _build_queue(request: HTTPConnection) -> BuildQueueService:
    return get_runtime(request).build_queue


def _builder_registry(request: HTTPConnection) -> BuilderRegistryService:
    return get_runtime(request).builder_registry


def _fleet(request: HTTPConnection) -> FleetService:
    return get_runtime(request).fleet


def _rollouts(request: HTTPConnection) -> RolloutService:
    return get_runtime(request).rollouts


def _playbook_runs(request: HTTPConnection) -> PlaybookRunService:
    return get_runtime(request).playbook_runs


def _training(request: HTTPConnection) -> TrainingService:
    return get_runtime(request).training


def _identity(request: HTTPConnection) -> IdentityService:
    return get_runtime(request).identity


def _enrollment(request: HTTPConnection) -> EnrollmentService:
    return get_runtime(request).enrollment


def _audit(request: HTTPConnection) -> AuditService:
    return get_runtime(request).audit


def _device_access(request: HTTPConnection) -> DeviceAccessService:
    return get_runtime(request).device_access


def _tunnel_sessions(request: HTTPConnection) -> TunnelSessionService:
    return get_runtime(request).tunnel_sessions


def _service_upstream(request: HTTPConnection) -> ServiceUpstream:
    return get_runtime(request).service_upstream


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
RegistryDep = Annotated[RegistryService, Depends(_registry)]
BuildsDep = Annotated[BuildService, Depends(_builds)]
BuildQueueDep = Annotated[BuildQueueService, Depends(_build_queue)]
BuilderRegistryDep = Annotated[BuilderRegistryService, Depends(_builder_registry)]
FleetDep = Annotated[FleetService, Depends(_fleet)]
RolloutsDep = Annotated[RolloutService, Depends(_rollouts)]
TrainingDep = Annotated[TrainingService, Depends(_training)]
PlaybookRunsDep = Annotated[PlaybookRunService, Depends(_playbook_runs)]
IdentityDep = Annotated[IdentityService, Depends(_identity)]
PrincipalDep = Annotated[Principal, Depends(principal_of)]
AuditDep = Annotated[AuditService, Depends(_audit)]
EnrollmentDep = Annotated[EnrollmentService, Depends(_enrollment)]
DeviceAccessDep = Annotated[DeviceAccessService, Depends(_device_access)]
TunnelSessionsDep = Annotated[TunnelSessionService, Depends(_tunnel_sessions)]
ServiceUpstreamDep = Annotated[ServiceUpstream, Depends(_service_upstream)]
