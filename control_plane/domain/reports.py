"""What a device's report may change: checked against what the control plane issued to it.

Pure. A device is not trusted about itself:
- a report naming an applied generation above the one issued to the device, or a model build (or version of it)
  never sent to the device, is refused whole: not stored, and the device gets an event saying why; a refusal or
  failed apply of a generation never issued (the agent names the generation a document it refused claimed) is a
  claim: stored, listed, and matched to no rollout (so a forged document cannot silence the device's reports);
- labels, channel, GPU class and hardware belong to the control plane (enrollment, operators, facts playbooks);
  a report that claims others is stored for what it says about models, but its claims change nothing: they are
  listed so the caller records them as an event. One exception, trust on first use: a device enrolled by an
  operator without hardware facts (and so without a GPU class) takes both from its first report; once the control
  plane holds them, reports never change them.
Telemetry windows for a model version never sent to the device are dropped the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from control_plane.domain.fleet import Device, DeviceFacts
from edge_agent.protocol import ApplyPhase, DesiredState, HardwareFacts, ModelTelemetry, ReportedState

MAX_ISSUED_BUILDS = 512  # builds remembered per device (newest kept); older ones are long replaced
HARDWARE_KEYS = ("gpu_class", "arch", "compute_capability", "tensorrt_version", "jetpack_version")


@dataclass(frozen=True)
class ReportVerdict:
    refusal: str | None = None  # the report is not stored
    claims: tuple[str, ...] = ()  # what it claims that the control plane does not take from it
    adopt_hardware: bool = False  # the control plane holds no facts yet: take the reported ones (first use)


def check_report(device: Device | DeviceFacts, reported: ReportedState) -> ReportVerdict:
    refusal = _generation_refusal(device, reported) or _build_refusal(device.issued_builds, reported)
    if refusal is not None:
        return ReportVerdict(refusal=refusal)
    return ReportVerdict(claims=tuple(_claims(device, reported)), adopt_hardware=device.hardware is None)


def _generation_refusal(device: Device | DeviceFacts, reported: ReportedState) -> str | None:
    issued = device.desired_generation
    if reported.applied_generation > issued:
        return f"reports applied generation {reported.applied_generation}, but generation {issued} is the newest issued"
    last = reported.last_apply
    if last is not None and last.generation > issued and last.phase is not ApplyPhase.FAILED:
        return f"reports an apply of generation {last.generation}, but generation {issued} is the newest issued"
    return None


def _build_refusal(issued: Mapping[str, tuple[str, int]], reported: ReportedState) -> str | None:
    for model in reported.models:
        sent = issued.get(model.build_id)
        if sent is None:
            return f"reports build {model.build_id!r} of {model.name} v{model.version}, never sent to it"
        if sent != (model.name, model.version):
            return (
                f"reports build {model.build_id!r} as {model.name} v{model.version}; "
                f"it was sent as {sent[0]} v{sent[1]}"
            )
    return None


def _claims(device: Device | DeviceFacts, reported: ReportedState) -> list[str]:
    claims = []
    last = reported.last_apply
    if last is not None and last.generation > device.desired_generation:
        newest = device.desired_generation
        claims.append(f"a failed apply of generation {last.generation}, never issued (newest: {newest})")
    foreign = {k: v for k, v in reported.labels.items() if device.labels.get(k) != v}
    if foreign:
        shown = ",".join(f"{k}={v}" for k, v in sorted(foreign.items()))
        claims.append(f"labels {shown} (not issued; selection unchanged)")
    if reported.channel != device.channel:
        claims.append(f"channel {reported.channel} (enrolled on {device.channel})")
    if device.gpu_class is not None and reported.hardware.gpu_class != device.gpu_class:
        claims.append(f"GPU class {reported.hardware.gpu_class} (enrolled as {device.gpu_class})")
    if device.hardware is not None:
        changed = hardware_changes(device.hardware, reported.hardware)
        if changed:
            claims.append("hardware " + ", ".join(changed) + " (re-enroll or run facts.yml to change it)")
    return claims


def hardware_changes(issued: HardwareFacts, claimed: HardwareFacts) -> list[str]:
    """The facts an artifact is keyed by that differ (drivers and load may change freely)."""
    return [
        f"{key} {getattr(claimed, key)}"
        for key in HARDWARE_KEYS
        if key != "gpu_class" and getattr(claimed, key) != getattr(issued, key)
    ]


def issued_telemetry(device: Device | DeviceFacts, models: Iterable[ModelTelemetry]) -> list[ModelTelemetry]:
    """Only windows of model versions the control plane sent to the device."""
    sent = set(device.issued_builds.values())
    return [m for m in models if (m.name, m.version) in sent]


def remember_issued(
    issued: Mapping[str, tuple[str, int]], builds: Iterable[tuple[str, str, int]]
) -> dict[str, tuple[str, int]]:
    """`issued` with `builds` (build id, model, version) added as the newest, bounded to MAX_ISSUED_BUILDS."""
    merged = {k: v for k, v in issued.items()}
    for build_id, model, version in builds:
        merged.pop(build_id, None)
        merged[build_id] = (model, version)
    excess = len(merged) - MAX_ISSUED_BUILDS
    return dict(list(merged.items())[excess:]) if excess > 0 else merged


def builds_in(document: DesiredState) -> list[tuple[str, str, int]]:
    """(build id, model, version) of every build a desired state sends: each model's and its fallback's."""
    found = []
    for model in document.models:
        found.append((model.build_id, model.name, model.version))
        if model.fallback is not None:
            found.append((model.fallback.build_id, model.name, model.version))
    return found
