"""Which artifact of a model assignment this device runs: the primary one, or the fallback, and why. Pure.

A hardware-specific artifact (a TensorRT plan) runs only on the hardware its key names, and only where the
TensorRT execution provider can actually run (onnxruntime-gpu lists it even on a host with no GPU). Deserialising
a plan built for other hardware fails at best and computes wrong answers at worst, and onnxruntime's TensorRT EP
only warns when an EPContext node's compute capability differs from the GPU's, so this decision is the guard.
It uses `HardwareKey.refusal`, the one compatibility rule the control plane also uses. Never does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from edge_agent.protocol import ArtifactRef, HardwareFacts, HardwareKey, ModelAssignment, RuntimeOptions
from edge_agent.protocol.vocabulary import ArtifactKind, ExecutionProvider

# The spellings, kept for the modules that still import them from here (the words live in the vocabulary).


@dataclass(frozen=True)
class Choice:
    """The artifact this device runs for one assignment, with the self-test tolerances that go with it."""

    build_id: str
    kind: ArtifactKind
    artifact: ArtifactRef
    runtime: RuntimeOptions
    atol: float
    rtol: float
    # Why the primary artifact was not used; None when it is the primary.
    fallback_reason: str | None = None
    hardware_key: HardwareKey | None = None


@dataclass(frozen=True)
class Refusal:
    """No artifact of the assignment can run here; `reason` says why, for the operator."""

    reason: str


def tensorrt_usable(facts: HardwareFacts, runtime_has_tensorrt_ep: bool) -> bool:
    """A GPU was detected (it has a compute capability) AND this onnxruntime has the TensorRT EP."""
    return facts.compute_capability is not None and runtime_has_tensorrt_ep


def choose_artifact(
    assignment: ModelAssignment, facts: HardwareFacts, runtime_has_tensorrt_ep: bool
) -> Choice | Refusal:
    """The primary artifact when it fits this device; else the fallback, with the reason; else a Refusal."""
    primary = primary_choice(assignment)
    why_not = unfit(primary.kind, primary.build_id, assignment.hardware_key, facts, runtime_has_tensorrt_ep)
    if why_not is None:
        return primary
    fallback = assignment.fallback
    if fallback is None:
        return Refusal(f"{why_not}, and no fallback was sent")
    fallback_unfit = unfit(
        fallback.artifact_kind, fallback.build_id, fallback.hardware_key, facts, runtime_has_tensorrt_ep
    )
    if fallback_unfit is not None:
        return Refusal(f"{why_not}; the fallback does not fit either: {fallback_unfit}")
    return Choice(
        build_id=fallback.build_id,
        kind=fallback.artifact_kind,
        artifact=fallback.artifact,
        runtime=fallback.runtime,
        atol=fallback.atol,
        rtol=fallback.rtol,
        fallback_reason=why_not,
        hardware_key=fallback.hardware_key,
    )


def primary_choice(assignment: ModelAssignment) -> Choice:
    """The assignment's preferred artifact, as if it fitted."""
    return Choice(
        build_id=assignment.build_id,
        kind=assignment.artifact_kind,
        artifact=assignment.artifact,
        runtime=assignment.runtime,
        atol=assignment.selftest.atol,
        rtol=assignment.selftest.rtol,
        hardware_key=assignment.hardware_key,
    )


def unfit(
    kind: ArtifactKind, build_id: str, key: HardwareKey | None, facts: HardwareFacts, runtime_has_tensorrt_ep: bool
) -> str | None:
    """Why one artifact cannot run on this device, or None when it can."""
    name = ArtifactKind(kind).value
    if key is not None:
        refusal = key.refusal(facts)
        if refusal is not None:
            return f"{name} {build_id} {_built_for(key)}, this device is {_device(facts)} ({refusal})"
    if kind == ArtifactKind.TENSORRT_PLAN:
        if facts.compute_capability is None:
            return f"{name} {build_id} needs an NVIDIA GPU, and none was detected on this device"
        if not runtime_has_tensorrt_ep:
            return (
                f"{name} {build_id} needs onnxruntime's {ExecutionProvider.TENSORRT.value}, and this onnxruntime "
                "offers only "
                f"{', '.join(facts.available_providers) or 'no providers'}"
            )
    return None


def _built_for(key: HardwareKey) -> str:
    cc = key.compute_capability or "any compute capability"
    compat = f" ({key.hardware_compatibility_level})" if key.hardware_compatibility_level not in (None, "none") else ""
    return f"built for {key.gpu_class} compute capability {cc}{compat} / TensorRT {key.tensorrt_version or 'any'}"


def _device(facts: HardwareFacts) -> str:
    cc = facts.compute_capability or "no GPU"
    return f"{facts.gpu_class} {cc} / TensorRT {facts.tensorrt_version or 'none'}"
