"""The per-kind step of a build: which library call turns the fp32 source into which artifact.

`execute.py` proves what these steps make; the steps themselves only make it. Each kind wraps one library made
for the job (onnxruntime's optimiser, onnxconverter-common, onnxruntime.quantization, TensorRT). A step must
never swallow a library's failure: it raises BuildError with the library's reason. The ONNX kinds run their
library in `ort_sandbox`'s killable child (a hostile graph can fold into gigabytes or calibrate forever); the
TensorRT plan is built in-process, only on a GPU host of its own class.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import onnx

from edge_agent.protocol.vocabulary import GPU_PROVIDERS, ArtifactKind, ExecutionProvider, Precision
from model_builds import fp16, ort_quantize, ort_runtime, ort_sandbox, tensorrt_plan
from model_builds.capabilities import tensorrt_importable
from model_builds.errors import BuildError
from model_builds.hardware import HostHardware
from model_builds.onnx_model import Arrays, ModelSignature
from model_builds.protocol import BuildTask, wire

ARTIFACT_NAME = "artifact.onnx"
# The portable `onnx` kind: standard-ONNX rewrites only (no contrib ops), so any onnxruntime runs it.
PORTABLE_LEVEL = ort_runtime.OptimizationLevel.BASIC
CALIBRATION_CHUNK = 8  # rows per calibration feed: fewer calibrator passes than one row at a time
TENSORRT_PROVIDERS = tuple(p.value for p in GPU_PROVIDERS)
CPU_PROVIDERS = (ExecutionProvider.CPU.value,)


@dataclass(frozen=True)
class Built:
    artifact: Path
    batches: tuple[int, ...]  # batch sizes to measure latency at
    options: dict[str, Any] = field(default_factory=dict)  # what the step decided (e.g. derived profiles)


def candidate_providers(kind: ArtifactKind) -> tuple[str, ...]:
    """Where the artifact is run for its proof: a plan only through the TensorRT EP, the rest on the CPU EP."""
    return TENSORRT_PROVIDERS if kind is ArtifactKind.TENSORRT_PLAN else CPU_PROVIDERS


def dynamic_batch(signature: ModelSignature) -> bool:
    return all(not isinstance(spec.shape[0], int) for spec in signature.inputs if spec.shape)


def latency_batches(signature: ModelSignature, inputs: Arrays) -> tuple[int, ...]:
    sample_batch = int(next(iter(inputs.values())).shape[0])
    return tuple(sorted({1, sample_batch})) if dynamic_batch(signature) else (sample_batch,)


def calibration_feeds(inputs: Arrays, dynamic: bool) -> list[Arrays]:
    if not dynamic:
        return [inputs]
    rows = int(next(iter(inputs.values())).shape[0])
    return [{k: v[i : i + CALIBRATION_CHUNK] for k, v in inputs.items()} for i in range(0, rows, CALIBRATION_CHUNK)]


def build_artifact(
    task: BuildTask,
    source: Path,
    signature: ModelSignature,
    inputs: Arrays,
    calibration: Arrays,
    workdir: Path,
    host: HostHardware,
    progress: Callable[[str, float | None], None],
    limits: ort_sandbox.EvalLimits = ort_sandbox.EvalLimits(),
) -> Built:
    artifact = workdir / ARTIFACT_NAME
    kind = task.spec.kind
    timeout_s, memory_bytes = limits.long_timeout_s, limits.memory_bytes
    try:
        if kind is ArtifactKind.ONNX:
            progress(f"optimising the graph (ORT_ENABLE_{PORTABLE_LEVEL.name}: standard ONNX ops only)", 0.2)
            ort_sandbox.optimise_bounded(
                source, artifact, PORTABLE_LEVEL.value, timeout_s=timeout_s, memory_bytes=memory_bytes
            )
            onnx.checker.check_model(str(artifact))
        elif kind is ArtifactKind.ONNX_FP16:
            progress("converting to float16 (IO kept float32)", 0.2)
            ort_sandbox.fp16_bounded(source, artifact, timeout_s=timeout_s, memory_bytes=memory_bytes)
        elif kind is ArtifactKind.ONNX_INT8_QDQ:
            progress("calibrating and quantising to int8 QDQ", 0.2)
            feeds = calibration_feeds(calibration, dynamic_batch(signature))
            ort_sandbox.quantize_bounded(source, artifact, feeds, timeout_s=timeout_s, memory_bytes=memory_bytes)
        else:
            return _build_plan(task, source, signature, inputs, calibration, workdir, host, progress)
    except (
        ort_runtime.RuntimeFailure,
        fp16.Fp16Failure,
        ort_quantize.QuantizationFailure,
        tensorrt_plan.PlanError,
    ) as exc:
        raise BuildError(str(exc)) from exc
    except onnx.checker.ValidationError as exc:
        raise BuildError(f"the built model is not valid ONNX: {exc}") from exc
    return Built(artifact, latency_batches(signature, inputs))


def plan_refusal(task: BuildTask, host: HostHardware, has_tensorrt: bool) -> str | None:
    """Why this host cannot build the plan `task` asks for, or None. Pure."""
    if not has_tensorrt:
        return "tensorrt is not installed on this builder (pip install tensorrt on a GPU host); no plan was built"
    if not host.gpu_present or host.compute_capability is None:
        return "this builder has no NVIDIA GPU; a TensorRT plan can only be built on the GPU it is for"
    if host.compute_capability != task.spec.compute_capability:
        return (
            f"the plan is for compute capability {task.spec.compute_capability}, this GPU is {host.compute_capability}"
        )
    if host.tensorrt_version != task.spec.tensorrt_version:
        return f"the plan is for TensorRT {task.spec.tensorrt_version}, this builder has {host.tensorrt_version}"
    return None


def _build_plan(
    task: BuildTask,
    source: Path,
    signature: ModelSignature,
    inputs: Arrays,
    calibration: Arrays,
    workdir: Path,
    host: HostHardware,
    progress: Callable[[str, float | None], None],
) -> Built:
    refusal = plan_refusal(task, host, tensorrt_importable())
    if refusal is not None:
        raise BuildError(refusal)
    from model_builds import tensorrt_builder  # only here: importing it needs tensorrt

    network_source = source
    if task.spec.precision is Precision.INT8:
        progress("quantising to QDQ for TensorRT explicit int8", 0.15)
        network_source = workdir / "qdq.onnx"
        ort_quantize.quantize_qdq(source, network_source, calibration_feeds(calibration, dynamic_batch(signature)))
    settings = tensorrt_plan.builder_settings(
        task.spec.precision,
        task.options,
        {t.name: t.shape for t in signature.inputs},
        {name: array.shape for name, array in inputs.items()},
        task.spec.compute_capability or "",
        host.arch,
    )
    progress(f"building the TensorRT plan (flags {list(settings.flags_on)})", 0.3)
    try:
        plan = tensorrt_builder.build_plan(network_source, settings, lambda line: progress(line, None))
    except tensorrt_builder.TensorRTFailure as exc:
        raise BuildError(str(exc)) from exc
    wrapper = tensorrt_plan.wrap_plan(
        plan, onnx.load(str(source)), host.compute_capability or "", tensorrt_builder.version()
    )
    artifact = workdir / ARTIFACT_NAME
    onnx.save(wrapper, str(artifact))
    batches = set(latency_batches(signature, inputs))
    for shape in settings.profiles.values():
        batches |= {shape.opt[0], shape.max[0]}
    profiles = {k: wire(v) for k, v in settings.profiles.items()}
    return Built(artifact, tuple(sorted(batches)), {"profiles": profiles, "flags": list(settings.flags_on)})
