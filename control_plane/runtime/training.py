"""Training jobs on the local backend (a subprocess per job), within the registered code and data roots.

Wiring only: where training code may come from is decided in domain/training_paths.py, never here.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from control_plane.adapters.training_local import LocalTrainingBackend
from control_plane.runtime.storage import Storage
from control_plane.services.registry import RegistryService
from control_plane.services.training import TrainingService
from control_plane.settings import ServerSettings

log = logging.getLogger(__name__)


def wire_training(
    settings: ServerSettings, storage: Storage, registry: RegistryService, clock: Callable[[], datetime]
) -> TrainingService:
    """The training service; jobs a restart interrupted are marked failed."""
    training = TrainingService(
        storage.repos.registry,
        registry,
        LocalTrainingBackend(),
        clock,
        settings.data_dir / "jobs",
        settings.training_workers,
        code_dirs=settings.training.code_dirs,
        data_dirs=settings.training.data_dirs,
    )
    failed = training.recover()
    if failed:
        log.warning("marked %d training job(s) failed: %s", failed, "control plane restarted during the job")
    return training
