"""The pure decisions of the build queue: which queued build a builder takes, when a lease has lapsed, and what a
queued build is waiting for.

Everything here is a function of its arguments (`now` is passed in, builders' abilities come in as predicates):
the service loads the inputs, applies the result with an atomic database update, and never decides itself.
Nothing here reads the clock, the database or the toolchain.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from control_plane.domain.registry import Build, BuilderRecord, BuildStatus, ModelVersion
from edge_agent.protocol.vocabulary import ArtifactKind
from model_builds.protocol import Tolerances

CanBuild = Callable[[Build], bool]


def claim_choice(queued: Iterable[Build], can_build: CanBuild) -> list[Build]:
    """The queued builds this builder may take, best first (oldest first): the service tries them in order,
    because another builder may win the atomic update of the first one."""
    candidates = [b for b in queued if b.status is BuildStatus.QUEUED and can_build(b)]
    return sorted(candidates, key=lambda b: (b.created_at, b.id))


def lease_lapsed(build: Build, now: datetime) -> bool:
    """A running build whose builder stopped renewing its lease goes back to the queue."""
    return build.status is BuildStatus.RUNNING and build.lease_expires_at is not None and build.lease_expires_at <= now


def lease_until(now: datetime, lease_s: float) -> datetime:
    return now + timedelta(seconds=lease_s)


def recent_builders(builders: Iterable[BuilderRecord], now: datetime, window: timedelta) -> list[BuilderRecord]:
    """Builders heard from (claim or heartbeat) within `window` of `now`, newest first."""
    return sorted((b for b in builders if now - b.last_seen <= window), key=lambda b: b.last_seen, reverse=True)


def needs(build: Build) -> str:
    """What kind of builder a build needs, in words (shown while it waits)."""
    if build.artifact_kind is ArtifactKind.TENSORRT_PLAN:
        return (
            f"a builder with TensorRT {build.tensorrt_version or '?'} "
            f"on compute capability {build.compute_capability or '?'}"
        )
    return f"a builder that builds {build.artifact_kind.value}"


@dataclass(frozen=True)
class BuildView:
    """A build as shown: its status derived against the builders seen recently."""

    build: Build
    status: BuildStatus
    waiting_for: str | None


def view(build: Build, able_builders: Sequence[BuilderRecord]) -> BuildView:
    """A queued build nobody recent can build is `waiting_for_builder`, saying what it needs."""
    if build.status is BuildStatus.QUEUED and not able_builders:
        return BuildView(build, BuildStatus.WAITING_FOR_BUILDER, needs(build))
    return BuildView(build, build.status, None)


def requeue_reason(build: Build) -> str:
    return f"lease of builder {build.builder_id or '?'} lapsed; back in the queue"


def version_tolerances(version: ModelVersion, build: Build) -> Tolerances:
    """The parity and self-test tolerances of `build`'s precision, with the version's overrides applied; a
    ValueError names the version and what is wrong (the caller says whose fault it is: 409 or 422)."""
    try:
        return Tolerances.from_overrides(build.precision, version.tolerances)
    except ValueError as exc:
        raise ValueError(f"{version.model} v{version.version}: tolerances: {exc}") from exc
