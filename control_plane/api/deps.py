"""FastAPI dependency aliases: a route names what it needs (`registry: RegistryDep`), never how it is built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

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


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


def _registry(request: Request) -> RegistryService:
    return get_runtime(request).registry


def _builds(request: Request) -> BuildService:
    return get_runtime(request).builds


def _build_queue(request: Request) -> BuildQueueService:
    return get_runtime(request).build_queue


def _builder_registry(request: Request) -> BuilderRegistryService:
    return get_runtime(request).builder_registry


def _fleet(request: Request) -> FleetService:
    return get_runtime(request).fleet


def _rollouts(request: Request) -> RolloutService:
    return get_runtime(request).rollouts


def _playbook_runs(request: Request) -> PlaybookRunService:
    return get_runtime(request).playbook_runs


def _training(request: Request) -> TrainingService:
    return get_runtime(request).training


def _identity(request: Request) -> IdentityService:
    return get_runtime(request).identity


def _enrollment(request: Request) -> EnrollmentService:
    return get_runtime(request).enrollment


def _audit(request: Request) -> AuditService:
    return get_runtime(request).audit


def _device_access(request: Request) -> DeviceAccessService:
    return get_runtime(request).device_access


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
