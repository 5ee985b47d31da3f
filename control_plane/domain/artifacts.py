"""Which artifact a device gets (docs/builds.md "Rollout: which artifact a device gets"): a pure decision.

For each device, walk its class's `runtime.preference`: a succeeded `tensorrt-plan` whose hardware key accepts
the device's reported hardware (`HardwareKey.refusal(facts) is None`) is chosen, with the class's portable ONNX
build travelling with it as the fallback; otherwise the class's ONNX-family build. A rejected or failed build is
never chosen. Nothing here reads the clock, the database or the catalog files: callers pass what they loaded.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from control_plane.domain.registry import Build, BuildStatus
from edge_agent.protocol import HardwareFacts, HardwareKey
from edge_agent.protocol.provider_options import ProviderOptions, for_device
from edge_agent.protocol.vocabulary import ArtifactKind, ExecutionProvider, Precision

ONNX = ArtifactKind.ONNX
# The portable kind of each precision (what an agent without a matching plan runs).
ONNX_KIND_OF_PRECISION = {
    Precision.FP32: ArtifactKind.ONNX,
    Precision.FP16: ArtifactKind.ONNX_FP16,
    Precision.INT8: ArtifactKind.ONNX_INT8_QDQ,
}
ONNX_FAMILY = frozenset(ONNX_KIND_OF_PRECISION.values())


@dataclass(frozen=True)
class ArtifactWish:
    """What the rollout request asked for; None leaves the choice to the class's preference (fp32 ONNX last)."""

    kind: ArtifactKind | None = None
    precision: Precision | None = None

    def __post_init__(self) -> None:
        # A wish spelled as text (a rollout request's validated `kind`/`precision`) is read as the words it names.
        if self.kind is not None:
            object.__setattr__(self, "kind", ArtifactKind(self.kind))
        if self.precision is not None:
            object.__setattr__(self, "precision", Precision(self.precision))


@dataclass(frozen=True)
class ArtifactPick:
    primary: Build
    fallback: Build | None = None


class NoArtifact(ValueError):
    """No succeeded build fits; the text names what is missing (a 409 for the operator)."""


def hardware_key_of(build: Build) -> HardwareKey | None:
    data = build.hardware_key or build.manifest.get("hardware_key")
    if not isinstance(data, Mapping) or not data.get("gpu_class"):
        return None
    try:
        return HardwareKey.model_validate(dict(data))
    except ValueError:
        return None


def plan_fits(build: Build, facts: HardwareFacts | None) -> bool:
    key = hardware_key_of(build)
    return facts is not None and key is not None and key.refusal(facts) is None


def choose_artifact(
    gpu_class: str,
    facts: HardwareFacts | None,
    preference: Sequence[ArtifactKind],
    builds: Iterable[Build],
    wish: ArtifactWish = ArtifactWish(),
) -> ArtifactPick:
    """The artifact for one device of `gpu_class` (see the module docstring), or NoArtifact naming the gap."""
    mine = [b for b in builds if b.target == gpu_class and b.status is BuildStatus.SUCCEEDED]
    mine.sort(key=lambda b: b.created_at, reverse=True)  # the newest build of a kind wins
    fallback = _portable(mine, Precision.FP32) if wish.kind in (None, ArtifactKind.TENSORRT_PLAN) else None
    for kind in preference:
        if kind == ArtifactKind.TENSORRT_PLAN and wish.kind in (None, ArtifactKind.TENSORRT_PLAN):
            plan = _plan(mine, facts, wish.precision)
            if plan is not None:
                return ArtifactPick(plan, fallback)
        elif kind in ONNX_FAMILY and wish.kind != ArtifactKind.TENSORRT_PLAN:
            portable = _portable_wished(mine, wish)
            if portable is not None:
                return ArtifactPick(portable)
    raise NoArtifact(_missing(gpu_class, wish, facts))


def _plan(builds: Sequence[Build], facts: HardwareFacts | None, precision: Precision | None) -> Build | None:
    return next(
        (
            b
            for b in builds
            if b.artifact_kind == ArtifactKind.TENSORRT_PLAN
            and (precision is None or b.precision == precision)
            and plan_fits(b, facts)
        ),
        None,
    )


def _portable(builds: Sequence[Build], precision: Precision) -> Build | None:
    kind = ONNX_KIND_OF_PRECISION.get(precision, ONNX)
    return next((b for b in builds if b.artifact_kind == kind and b.precision == precision), None)


def _portable_wished(builds: Sequence[Build], wish: ArtifactWish) -> Build | None:
    if wish.kind is not None:
        return next((b for b in builds if b.artifact_kind == wish.kind and wish.precision in (None, b.precision)), None)
    return _portable(builds, wish.precision or Precision.FP32)


def _missing(gpu_class: str, wish: ArtifactWish, facts: HardwareFacts | None) -> str:
    if wish.kind == ArtifactKind.TENSORRT_PLAN:
        where = (
            f"compute capability {facts.compute_capability or 'none'}, TensorRT {facts.tensorrt_version or 'none'}"
            if facts is not None
            else "hardware not reported yet"
        )
        return (
            f"no succeeded {ArtifactKind.TENSORRT_PLAN} build for GPU class {gpu_class} that fits the device ({where})"
        )
    kind = wish.kind or ONNX_KIND_OF_PRECISION.get(wish.precision or Precision.FP32, ONNX)
    natural = Precision.FP32.value if wish.kind in (None, ONNX) else "any precision"
    precision = wish.precision.value if wish.precision else natural
    return f"no succeeded {kind.value} build ({precision}) for GPU class {gpu_class}; build it first"


def provider_options(
    options: ProviderOptions, gpu_class: str, facts: HardwareFacts | None, precision: Precision
) -> dict[ExecutionProvider, dict[str, str]]:
    """The class's provider options for one device (the wire contract's one resolver, its control-plane step):
    the engine cache path keyed by this device's hardware (`{data_dir}` stays for the agent to fill), and the
    TensorRT EP precision flags set by the artifact's precision (an fp32 artifact must not be run in fp16 behind
    the operator's back)."""
    return for_device(options, gpu_class, facts, precision)
