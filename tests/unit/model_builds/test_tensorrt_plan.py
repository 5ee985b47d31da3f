"""The TensorRT decisions made without TensorRT: flags, profiles, compatibility, and the EPContext wrapper."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import onnx
import pytest

from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.build_steps import plan_refusal
from model_builds.hardware import HostHardware
from model_builds.protocol import BuildOptions, ProfileShape
from model_builds.tensorrt_plan import (
    PlanError,
    builder_settings,
    compatibility_level,
    derive_profiles,
    plan_bytes,
    precision_flags,
    wrap_plan,
)
from tests.unit.model_builds.models import convnet
from tests.unit.model_builds.test_builds import task_for


@pytest.mark.parametrize(
    ("precision", "on", "off"),
    [
        pytest.param(Precision.FP32, (), ("TF32",), id="fp32-no-tf32"),
        pytest.param(Precision.FP16, ("FP16",), (), id="fp16"),
        pytest.param(Precision.INT8, ("INT8", "FP16"), (), id="int8-qdq-with-fp16-between"),
    ],
)
def test_precision_flags(precision: Precision, on: tuple[str, ...], off: tuple[str, ...]) -> None:
    assert precision_flags(precision) == (on, off)


def test_profiles_derived_from_the_samples_batch_or_given() -> None:
    declared = {"img": ("n", 3, 224, 224), "static": (1, 4)}
    derived = derive_profiles(declared, {"img": (8, 3, 224, 224), "static": (1, 4)}, None)
    assert derived == {"img": ProfileShape((1, 3, 224, 224), (8, 3, 224, 224), (16, 3, 224, 224))}
    given = {"img": ProfileShape((1, 3, 224, 224), (4, 3, 224, 224), (32, 3, 224, 224))}
    assert derive_profiles(declared, {"img": (8, 3, 224, 224)}, given) == given
    with pytest.raises(PlanError, match="profiles name input"):
        derive_profiles(declared, {"img": (8, 3, 224, 224)}, {"nope": given["img"]})


@pytest.mark.parametrize(
    ("level", "cc", "arch", "expected"),
    [
        pytest.param(None, "7.5", "x86_64", None, id="default"),
        pytest.param("ampere+", "8.9", "x86_64", "AMPERE_PLUS", id="ada-ampere-plus"),
        pytest.param("same_compute_capability", "7.2", "aarch64", "NONE", id="xavier-same"),
        pytest.param("ampere+", "7.5", "x86_64", "needs compute capability 8.0", id="turing-refused"),
        pytest.param("ampere+", "8.7", "aarch64", "discrete GPUs", id="jetson-refused"),
    ],
)
def test_hardware_compatibility(level: str | None, cc: str, arch: str, expected: str | None) -> None:
    if expected is None or expected.isupper():
        assert compatibility_level(level, cc, arch) == expected
    else:
        with pytest.raises(PlanError, match=expected):
            compatibility_level(level, cc, arch)


def test_builder_settings_put_it_together() -> None:
    settings = builder_settings(
        Precision.FP16, BuildOptions(workspace_mb=512), {"x": ("b", 8)}, {"x": (4, 8)}, "8.6", "x86_64"
    )
    assert (settings.flags_on, settings.workspace_bytes, settings.compatibility_level) == (("FP16",), 512 << 20, None)
    assert settings.profiles == {"x": ProfileShape((1, 8), (4, 8), (8, 8))}


def test_the_wrapper_is_valid_onnx_with_the_source_io_and_the_plan_inside(tmp_path: Path) -> None:
    source = convnet()
    plan = b"\x00trt-plan\xffbytes" * 100
    wrapper = wrap_plan(plan, source, "8.7", "10.3.0")
    onnx.checker.check_model(wrapper)
    path = tmp_path / "plan.onnx"
    onnx.save(wrapper, str(path))
    loaded = onnx.load(str(path))
    assert [(i.name, i.type) for i in loaded.graph.input] == [(i.name, i.type) for i in source.graph.input]
    assert [(o.name, o.type) for o in loaded.graph.output] == [(o.name, o.type) for o in source.graph.output]
    (node,) = loaded.graph.node
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert (node.op_type, node.domain) == ("EPContext", "com.microsoft")
    assert (attrs["embed_mode"], attrs["main_context"], attrs["source"]) == (1, 1, b"TensorrtExecutionProvider")
    assert (attrs["hardware_architecture"], attrs["ep_sdk_version"]) == (b"87", b"10.3.0")
    assert plan_bytes(loaded) == plan
    assert {o.domain: o.version for o in loaded.opset_import} == {"": 17, "com.microsoft": 1}


GPU_HOST = HostHardware("dgpu-ada", "x86_64", True, "NVIDIA L4", "8.9", "535.129.03", tensorrt_version="10.3.0")


@pytest.mark.parametrize(
    ("host", "has_trt", "reason"),
    [
        pytest.param(GPU_HOST, False, "tensorrt is not installed on this builder", id="no-tensorrt"),
        pytest.param(HostHardware("cpu-x86_64", "x86_64", False), True, "has no NVIDIA GPU", id="no-gpu"),
        pytest.param(replace(GPU_HOST, compute_capability="8.6"), True, "this GPU is 8.6", id="cc"),
        pytest.param(replace(GPU_HOST, tensorrt_version="10.8.0"), True, "has 10.8.0", id="trt"),
        pytest.param(GPU_HOST, True, None, id="match"),
    ],
)
def test_a_plan_is_built_only_on_matching_hardware(host: HostHardware, has_trt: bool, reason: str | None) -> None:
    task = task_for(ArtifactKind.TENSORRT_PLAN, Precision.FP16, target="dgpu-ada", cc="8.9", trt="10.3.0")
    refusal = plan_refusal(task, host, has_trt)
    assert (refusal is None) if reason is None else (refusal is not None and reason in refusal)
