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

TENSORRT_PLAN = "tensorrt-plan"
ONNX = "onnx"
# The portable kind of each precision (what an agent without a matching plan runs).
ONNX_KIND_OF_PRECISION = {"fp32": "onnx", "fp16": "onnx-fp16", "int8": "onnx-int8-qdq"}
ONNX_FAMILY = frozenset(ONNX_KIND_OF_PRECISION.values())
TRT_EP = "TensorrtExecutionProvider"
_TEMPLATE_KEYS = ("gpu_class", "compute_capability", "tensorrt_version")


@dataclass(frozen=True)
class ArtifactWish:
    """What the rollout request asked for; None leaves the choice to the class's preference (fp32 ONNX last)."""

    kind: str | None = None
    precision: str | None = None


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
    preference: Sequence[str],
    builds: Iterable[Build],
    wish: ArtifactWish = ArtifactWish(),
) -> ArtifactPick:
    """The artifact for one device of `gpu_class` (see the module docstring), or NoArtifact naming the gap."""
    mine = [b for b in builds if b.target == gpu_class and b.status is BuildStatus.SUCCEEDED]
    mine.sort(key=lambda b: b.created_at, reverse=True)  # the newest build of a kind wins
    fallback = _portable(mine, "fp32") if wish.kind in (None, TENSORRT_PLAN) else None
    for kind in preference:
        if kind == TENSORRT_PLAN and wish.kind in (None, TENSORRT_PLAN):
            plan = _plan(mine, facts, wish.precision)
            if plan is not None:
                return ArtifactPick(plan, fallback)
        elif kind in ONNX_FAMILY and wish.kind != TENSORRT_PLAN:
            portable = _portable_wished(mine, wish)
            if portable is not None:
                return ArtifactPick(portable)
    raise NoArtifact(_missing(gpu_class, wish, facts))


def _plan(builds: Sequence[Build], facts: HardwareFacts | None, precision: str | None) -> Build | None:
    return next(
        (
            b
            for b in builds
            if b.artifact_kind == TENSORRT_PLAN
            and (precision is None or b.precision == precision)
            and plan_fits(b, facts)
        ),
        None,
    )


def _portable(builds: Sequence[Build], precision: str) -> Build | None:
    kind = ONNX_KIND_OF_PRECISION.get(precision, ONNX)
    return next((b for b in builds if b.artifact_kind == kind and b.precision == precision), None)


def _portable_wished(builds: Sequence[Build], wish: ArtifactWish) -> Build | None:
    if wish.kind is not None:
        return next((b for b in builds if b.artifact_kind == wish.kind and wish.precision in (None, b.precision)), None)
    return _portable(builds, wish.precision or "fp32")


def _missing(gpu_class: str, wish: ArtifactWish, facts: HardwareFacts | None) -> str:
    if wish.kind == TENSORRT_PLAN:
        where = (
            f"compute capability {facts.compute_capability or 'none'}, TensorRT {facts.tensorrt_version or 'none'}"
            if facts is not None
            else "hardware not reported yet"
        )
        return f"no succeeded tensorrt-plan build for GPU class {gpu_class} that fits the device ({where})"
    kind = wish.kind or ONNX_KIND_OF_PRECISION.get(wish.precision or "fp32", ONNX)
    precision = wish.precision or ("fp32" if wish.kind in (None, ONNX) else "any precision")
    return f"no succeeded {kind} build ({precision}) for GPU class {gpu_class}; build it first"


def provider_options(
    options: Mapping[str, Mapping[str, str]], gpu_class: str, facts: HardwareFacts | None, precision: str
) -> dict[str, dict[str, str]]:
    """The class's provider options for one device: the engine cache path keyed by this device's hardware
    (`{data_dir}` stays for the agent to fill), and the TensorRT EP precision flags set by the artifact's
    precision (an fp32 artifact must not be run in fp16 behind the operator's back)."""
    values = {
        "gpu_class": gpu_class,
        "compute_capability": (facts.compute_capability if facts else None) or "none",
        "tensorrt_version": (facts.tensorrt_version if facts else None) or "none",
    }
    out: dict[str, dict[str, str]] = {}
    for provider, settings in options.items():
        filled = {k: _fill(v, values) for k, v in settings.items()}
        if provider == TRT_EP:
            if "trt_fp16_enable" in filled:
                filled["trt_fp16_enable"] = "true" if precision == "fp16" else "false"
            if "trt_int8_enable" in filled:
                filled["trt_int8_enable"] = "true" if precision == "int8" else "false"
        out[provider] = filled
    return out


def _fill(template: str, values: Mapping[str, str]) -> str:
    for key in _TEMPLATE_KEYS:
        template = template.replace("{" + key + "}", values[key])
    return template
