"""FastAPI dependency aliases: a route names what it needs (`registry: RegistryDep`), never how it is built."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from control_plane.api.container import Runtime
from control_plane.services.build_queue import BuildQueueService
from control_plane.services.builds import BuildService
from control_plane.services.fleet import FleetService
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


def _fleet(request: Request) -> FleetService:
    return get_runtime(request).fleet


def _rollouts(request: Request) -> RolloutService:
    return get_runtime(request).rollouts


def _playbook_runs(request: Request) -> PlaybookRunService:
    return get_runtime(request).playbook_runs


def _training(request: Request) -> TrainingService:
    return get_runtime(request).training


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
RegistryDep = Annotated[RegistryService, Depends(_registry)]
BuildsDep = Annotated[BuildService, Depends(_builds)]
BuildQueueDep = Annotated[BuildQueueService, Depends(_build_queue)]
FleetDep = Annotated[FleetService, Depends(_fleet)]
RolloutsDep = Annotated[RolloutService, Depends(_rollouts)]
TrainingDep = Annotated[TrainingService, Depends(_training)]
PlaybookRunsDep = Annotated[PlaybookRunService, Depends(_playbook_runs)]
