"""The pure half of a TensorRT build: builder settings, optimisation profiles, and the EPContext wrapper.

A serialised plan is opaque bytes tied to one GPU and TensorRT version; onnxruntime's TensorRT EP loads it when
it sits in an ONNX model as one `com.microsoft` `EPContext` node (`embed_mode=1`, the plan in `ep_cache_context`)
with the source model's IO. Everything here is decided without TensorRT so it is tested on any host; this module
must never import `tensorrt` (that is `tensorrt_builder.py`, which applies these decisions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import onnx
from onnx import helper

from edge_agent.protocol.vocabulary import ExecutionProvider, Precision
from model_builds.protocol import BuildOptions, ProfileShape

EP_CONTEXT_OP = "EPContext"
EP_CONTEXT_DOMAIN = "com.microsoft"
# HardwareKey.hardware_compatibility_level -> the name of tensorrt.HardwareCompatibilityLevel.
COMPATIBILITY_LEVELS = {"none": "NONE", "same_compute_capability": "NONE", "ampere+": "AMPERE_PLUS"}


class PlanError(ValueError):
    """A plan that cannot be built as asked (e.g. hardware compatibility on a pre-Ampere GPU)."""


@dataclass(frozen=True)
class BuilderSettings:
    """What to set on a tensorrt.IBuilderConfig: flag names to set and clear, memory, profiles, compatibility."""

    flags_on: tuple[str, ...]
    flags_off: tuple[str, ...]
    workspace_bytes: int
    profiles: Mapping[str, ProfileShape]
    compatibility_level: str | None  # a tensorrt.HardwareCompatibilityLevel member name, None = leave the default


def precision_flags(precision: Precision) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(BuilderFlag names to set, to clear). fp32 clears TF32 so an fp32 plan meets fp32 tolerances."""
    if precision is Precision.FP16:
        return ("FP16",), ()
    if precision is Precision.INT8:
        # The QDQ graph fixes what runs in int8; FP16 lets the layers between Q/DQ pairs run at half precision.
        return ("INT8", "FP16"), ()
    return (), ("TF32",)


def compatibility_level(level: str | None, compute_capability: str, arch: str) -> str | None:
    if level is None:
        return None
    if level not in COMPATIBILITY_LEVELS:
        raise PlanError(f"unknown hardware compatibility level {level!r} (known: {sorted(COMPATIBILITY_LEVELS)})")
    if level == "ampere+":
        if tuple(int(p) for p in compute_capability.split(".")) < (8, 0):
            raise PlanError(
                f"hardware compatibility ampere+ needs compute capability 8.0 or newer, not {compute_capability}"
            )
        if arch != "x86_64":
            raise PlanError("hardware compatibility ampere+ is for discrete GPUs; Jetson plans are built per device")
    return COMPATIBILITY_LEVELS[level]


def derive_profiles(
    input_shapes: Mapping[str, Sequence[int | str]],
    sample_shapes: Mapping[str, Sequence[int]],
    given: Mapping[str, ProfileShape] | None,
) -> dict[str, ProfileShape]:
    """A profile per input with a dynamic dimension: the given one, else batch min 1, opt the samples', max 2x.

    `input_shapes` are the model's declared shapes (a str is a dynamic dim); other dynamic dims take the sample's.
    """
    profiles: dict[str, ProfileShape] = {}
    for name, declared in input_shapes.items():
        if all(isinstance(d, int) and d > 0 for d in declared):
            continue
        if given and name in given:
            profiles[name] = given[name]
            continue
        sample = tuple(int(d) for d in sample_shapes[name])
        lowest, highest = list(sample), list(sample)
        if declared and not (isinstance(declared[0], int) and declared[0] > 0):
            lowest[0], highest[0] = 1, 2 * sample[0]
        profiles[name] = ProfileShape(tuple(lowest), sample, tuple(highest))
    unknown = sorted(set(given or {}) - set(input_shapes))
    if unknown:
        raise PlanError(f"profiles name input(s) {unknown} the model does not have (it has {sorted(input_shapes)})")
    return profiles


def builder_settings(
    precision: Precision,
    options: BuildOptions,
    input_shapes: Mapping[str, Sequence[int | str]],
    sample_shapes: Mapping[str, Sequence[int]],
    compute_capability: str,
    arch: str,
) -> BuilderSettings:
    on, off = precision_flags(precision)
    return BuilderSettings(
        flags_on=on,
        flags_off=off,
        workspace_bytes=options.workspace_mb << 20,
        profiles=derive_profiles(input_shapes, sample_shapes, options.profiles),
        compatibility_level=compatibility_level(options.hardware_compatibility_level, compute_capability, arch),
    )


def wrap_plan(plan: bytes, source: onnx.ModelProto, compute_capability: str, tensorrt_version: str) -> onnx.ModelProto:
    """An ONNX model of one EPContext node holding `plan`, with the source model's inputs and outputs."""
    initializers = {i.name for i in source.graph.initializer}
    inputs = [i for i in source.graph.input if i.name not in initializers]
    outputs = list(source.graph.output)
    node = helper.make_node(
        EP_CONTEXT_OP,
        inputs=[i.name for i in inputs],
        outputs=[o.name for o in outputs],
        name="tensorrt_plan",
        domain=EP_CONTEXT_DOMAIN,
        main_context=1,
        embed_mode=1,
        ep_cache_context=plan,
        ep_sdk_version=tensorrt_version,
        hardware_architecture=compute_capability.replace(".", ""),  # the EP compares it with its GPU's "87"
        source=ExecutionProvider.TENSORRT.value,
    )
    graph = helper.make_graph([node], "tensorrt_plan", inputs, outputs)
    opsets = [o for o in source.opset_import if o.domain in ("", "ai.onnx")]
    opsets.append(helper.make_opsetid(EP_CONTEXT_DOMAIN, 1))
    return helper.make_model(graph, opset_imports=opsets, ir_version=source.ir_version, producer_name="model_builds")


def plan_bytes(model: onnx.ModelProto) -> bytes:
    """The plan embedded in a wrapper made by `wrap_plan`."""
    nodes = [n for n in model.graph.node if n.op_type == EP_CONTEXT_OP and n.domain == EP_CONTEXT_DOMAIN]
    if len(nodes) != 1:
        raise PlanError(f"expected one EPContext node, found {len(nodes)}")
    attrs = {a.name: helper.get_attribute_value(a) for a in nodes[0].attribute}
    if attrs.get("embed_mode") != 1:
        raise PlanError("the EPContext node does not embed its plan (embed_mode != 1)")
    value = attrs.get("ep_cache_context")
    if not isinstance(value, bytes):
        raise PlanError("the EPContext node has no ep_cache_context bytes")
    return value
