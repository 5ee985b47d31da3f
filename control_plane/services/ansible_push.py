"""The Ansible push channel of rollouts: deliver signed desired states with `deploy_model.yml`.

For each executor pass that publishes to devices on the Ansible channel, this writes one bundle per device (the
signed document as `desired.json` and the artifacts it names as `artifacts/<sha256>`, hard links into the artifact
store where the filesystem allows) and submits ONE playbook run for those hosts. The playbook service stores each
host's `edge_result.reported` as the device's reported state; what this module adds is the other outcome: a host
the push never reached (unreachable, a failed copy, a cancelled or interrupted run) gets a delivery failure for
its generation, which the rollout planner counts as a failed install or restore.

It never decides anything about the rollout itself and never raises into the rollout executor.
"""

from __future__ import annotations

import logging
import os
import shutil
import uuid
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from control_plane.domain.errors import ServiceError
from control_plane.domain.playbooks import (
    HostResult,
    HostStatus,
    PlaybookName,
    PlaybookRun,
    PlaybookRunRequest,
    RunStatus,
)
from control_plane.domain.rollouts import DesiredUpdate
from control_plane.services.ports import Artifacts, Clock, FleetStore
from edge_agent.protocol import DesiredState

log = logging.getLogger(__name__)

PURPOSE_PREFIX = "rollout:"


class RunSubmitter(Protocol):
    def submit(
        self,
        request: PlaybookRunRequest,
        purpose: str | None = None,
        host_vars: Mapping[str, Mapping[str, Any]] | None = None,
        on_finished: Callable[[PlaybookRun], None] | None = None,
    ) -> PlaybookRun: ...


class AnsiblePush:
    def __init__(
        self,
        runs: RunSubmitter,
        fleet: FleetStore,
        artifacts: Artifacts,
        bundles_dir: Path,
        clock: Clock,
        wake: Callable[[], None],
    ) -> None:
        self._runs = runs
        self._fleet = fleet
        self._artifacts = artifacts
        self._bundles_dir = bundles_dir
        self._clock = clock
        self._wake = wake

    def deploy(self, rollout_id: str, updates: Sequence[DesiredUpdate]) -> None:
        generations = {u.device_id: u.generation for u in updates}
        root = self._bundles_dir / f"{rollout_id}-{uuid.uuid4().hex[:8]}"
        try:
            host_vars = {u.device_id: {"edge_bundle_dir": str(self._bundle(root / u.device_id, u))} for u in updates}
            request = PlaybookRunRequest(PlaybookName.DEPLOY_MODEL, hosts=tuple(generations))
            self._runs.submit(
                request,
                purpose=PURPOSE_PREFIX + rollout_id,
                host_vars=host_vars,
                on_finished=lambda run: self._finished(run, generations, root),
            )
        except (ServiceError, OSError) as exc:
            log.error("rollout %s: cannot push to %s: %s", rollout_id, ", ".join(generations), exc)
            shutil.rmtree(root, ignore_errors=True)
            self._fail(generations, f"cannot start deploy_model.yml: {exc}")

    def recover(self, interrupted: Sequence[PlaybookRun]) -> int:
        """Runs a previous control plane left unfinished: their hosts that had not applied what was pushed get a
        delivery failure (the rollout then fails or retries them instead of waiting for their deadline)."""
        generations: dict[str, int] = {}
        for run in interrupted:
            if run.purpose is None or not run.purpose.startswith(PURPOSE_PREFIX):
                continue
            for host in run.hosts:
                device = self._fleet.get_device(host.host)
                applied = device.reported.applied_generation if device and device.reported else 0
                if device is not None and device.desired_generation > applied:
                    generations[host.host] = device.desired_generation
        self._fail(generations, "the control plane restarted during the push")
        shutil.rmtree(self._bundles_dir, ignore_errors=True)
        return len(generations)

    # -- internals ----------------------------------------------------------------------------------------------
    def _bundle(self, directory: Path, update: DesiredUpdate) -> Path:
        artifacts = directory / "artifacts"
        artifacts.mkdir(parents=True)
        (directory / "desired.json").write_text(update.signed.model_dump_json())
        document = DesiredState.model_validate_json(update.signed.document)
        for sha256 in sorted({ref.sha256 for ref in document.artifact_refs()}):
            source = self._artifacts.path_for(sha256)
            if source is None:
                raise ServiceError(f"artifact {sha256} is missing from the artifact store")
            _link_or_copy(source, artifacts / sha256)
        return directory

    def _finished(self, run: PlaybookRun, generations: Mapping[str, int], root: Path) -> None:
        try:
            now = self._clock()
            for device, generation in generations.items():
                reason = _undelivered(run.host(device), generation)
                if reason is not None:
                    self._fleet.record_delivery_failure(device, generation, _why(run, reason), now)
        finally:
            shutil.rmtree(root, ignore_errors=True)
            self._wake()

    def _fail(self, generations: Mapping[str, int], reason: str) -> None:
        now = self._clock()
        for device, generation in generations.items():
            self._fleet.record_delivery_failure(device, generation, reason, now)
        if generations:
            self._wake()


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)  # another filesystem: the bundle holds a copy


def _undelivered(host: HostResult | None, generation: int) -> str | None:
    """Why the push did not reach the agent for `generation`, or None when the agent answered (its report, even
    a refusal, went to the fleet and the planner reads it from there)."""
    if host is None:
        return "the host was not in the run"
    reported = (host.result or {}).get("reported")
    if isinstance(reported, dict) and _answered(reported, generation):
        return None
    if host.status.succeeded:
        return None if host.result else "deploy_model.yml returned no result for the host"
    if host.status is HostStatus.UNREACHABLE:
        return f"unreachable: {host.message or 'no reason given'}"
    if host.status is HostStatus.PENDING:
        return "the run ended before it reached the host"
    return f"deploy_model.yml failed: {host.message or 'no reason given'}"


def _answered(reported: Mapping[str, Any], generation: int) -> bool:
    last = reported.get("last_apply")
    applied = reported.get("applied_generation")
    if isinstance(applied, int) and applied >= generation:
        return True
    return isinstance(last, dict) and last.get("generation") == generation


def _why(run: PlaybookRun, reason: str) -> str:
    if run.status is RunStatus.CANCELLED:
        return f"playbook run {run.id} was cancelled: {reason}"
    return f"{reason} (playbook run {run.id})"
