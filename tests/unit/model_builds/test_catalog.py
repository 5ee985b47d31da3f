"""The GPU-class catalog: what each built-in class says, and files refused as FILE:LINE: reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.protocol import HardwareFacts
from edge_agent.protocol.provider_options import for_device
from edge_agent.protocol.vocabulary import ArtifactKind, ExecutionProvider, Precision
from model_builds.catalog import CatalogError, DeviceType, load_catalog

GPU = """\
name: {name}
arch: x86_64
compute_capabilities: ["8.9"]
tensorrt_versions: ["10.3.0"]
precisions: [fp32, fp16]
kinds: [onnx, onnx-fp16, tensorrt-plan]
runtime:
  preference: [tensorrt-plan, onnx]
  providers: [TensorrtExecutionProvider, CPUExecutionProvider]
"""
CPU = """\
name: {name}
arch: x86_64
device: cpu
precisions: [fp32]
runtime:
  preference: [onnx]
  providers: [CPUExecutionProvider]
"""


def test_every_builtin_class_is_known_with_its_hardware() -> None:
    catalog = load_catalog()
    got = {
        t.name: (t.arch, t.device, t.compute_capabilities, t.tensorrt_versions, t.jetpack_versions)
        for t in catalog.all()
    }
    assert got == {
        "cpu-aarch64": ("aarch64", DeviceType.CPU, [], [], []),
        "cpu-x86_64": ("x86_64", DeviceType.CPU, [], [], []),
        "dgpu-ada": ("x86_64", DeviceType.GPU, ["8.9"], ["10.3.0", "10.8.0", "10.13.0"], []),
        "dgpu-ampere": ("x86_64", DeviceType.GPU, ["8.0", "8.6"], ["10.3.0", "10.8.0", "10.13.0"], []),
        "dgpu-hopper": ("x86_64", DeviceType.GPU, ["9.0"], ["10.3.0", "10.8.0", "10.13.0"], []),
        "dgpu-turing": ("x86_64", DeviceType.GPU, ["7.5"], ["10.3.0", "10.8.0"], []),
        "jetson-orin": ("aarch64", DeviceType.GPU, ["8.7"], ["8.6.2", "10.3.0"], ["6.0", "6.1", "6.2"]),
        "jetson-xavier": ("aarch64", DeviceType.GPU, ["7.2"], ["8.5.2"], ["5.1"]),
    }
    for target in catalog.all():
        plan_allowed = ArtifactKind.TENSORRT_PLAN in target.kinds
        assert plan_allowed == target.has_gpu, target.name
        assert (ArtifactKind.ONNX_INT8_QDQ in target.kinds) == (Precision.INT8 in target.precisions)
        dla = "trt_dla_core" in target.provider_options.get("TensorrtExecutionProvider", {})
        assert dla == target.name.startswith("jetson-"), target.name


@pytest.mark.parametrize(
    ("precision", "fp16", "int8"),
    [
        pytest.param(Precision.FP32, "false", "false", id="fp32"),
        pytest.param(Precision.FP16, "true", "false", id="fp16"),
        # What ships (the control plane's resolver, the one kept): an int8 artifact runs with int8 only.
        pytest.param(Precision.INT8, "false", "true", id="int8"),
    ],
)
def test_provider_options_key_the_engine_cache_by_hardware(precision: Precision, fp16: str, int8: str) -> None:
    orin = load_catalog().get("jetson-orin")
    assert orin is not None
    facts = HardwareFacts(gpu_class="jetson-orin", arch="aarch64", compute_capability="8.7", tensorrt_version="10.3.0")
    resolved = for_device(orin.provider_options, orin.name, facts, precision)
    trt = resolved[ExecutionProvider.TENSORRT]
    assert trt["trt_engine_cache_path"] == "{data_dir}/trt-cache/jetson-orin/sm8.7-trt10.3.0"
    assert (trt["trt_fp16_enable"], trt["trt_int8_enable"], trt["trt_dla_core"]) == (fp16, int8, "0")
    assert list(orin.runtime.providers) == [
        "TensorrtExecutionProvider",
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]


def test_a_user_folder_adds_a_class(tmp_path: Path) -> None:
    (tmp_path / "my-gpu.yaml").write_text(GPU.format(name="my-gpu"))
    target = load_catalog(tmp_path).get("my-gpu")
    assert target is not None and target.device is DeviceType.GPU


def _line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize(
    ("text", "at", "reason"),  # `at`: text on the line the error must point to
    [
        pytest.param("name: broken\narch: x86_64 bad: indent\n", "bad:", "cannot read YAML", id="yaml-syntax"),
        pytest.param(
            CPU.format(name="broken").replace(
                "precisions: [fp32]", "compute_capabilities: ['8.6']\nprecisions: [fp32]"
            ),
            "compute_capabilities",
            "a cpu class cannot have GPU compute capabilities",
            id="cpu-with-compute-capability",
        ),
        pytest.param(
            CPU.format(name="broken").replace("precisions: [fp32]", "precisions: [fp32]\nkinds: [onnx, tensorrt-plan]"),
            "kinds:",
            "tensorrt-plan needs a GPU class",
            id="plan-without-gpu",
        ),
        pytest.param(
            CPU.format(name="broken").replace("precisions: [fp32]", "precisions: [fp32]\nkinds: [onnx, onnx-int8-qdq]"),
            "kinds:",
            "onnx-int8-qdq is listed but precision int8 is not allowed",
            id="int8-kind-without-int8",
        ),
        pytest.param(
            GPU.format(name="broken").replace("[tensorrt-plan, onnx]", "[onnx, onnx-int8-qdq]"),
            "preference",
            "onnx-int8-qdq is preferred but not in kinds",
            id="preferred-kind-not-allowed",
        ),
        pytest.param(
            CPU.format(name="broken").replace(
                "[CPUExecutionProvider]", "[CUDAExecutionProvider, CPUExecutionProvider]"
            ),
            "providers:",
            "cannot use ['CUDAExecutionProvider']",
            id="gpu-provider-on-cpu",
        ),
        pytest.param(
            GPU.format(name="broken") + "provider_options:\n  TensorrtExecutionProvider:\n    trt_dla_enable: 'true'\n",
            "  TensorrtExecutionProvider:",
            "DLA enabled but the class lists no dla accelerator",
            id="dla-without-dla",
        ),
        pytest.param(GPU.format(name="broken").replace("8.9", "sm89"), "compute_capabilities", "'8.7'", id="bad-cc"),
        pytest.param(GPU.format(name="broken").replace("fp16]", "fp8]"), "precisions", "precisions.1", id="bad-prec"),
        pytest.param(GPU.format(name="broken") + "colour: red\n", "colour", "Extra inputs", id="unknown-key"),
        pytest.param(GPU.format(name="broken").replace("arch: x86_64\n", ""), "name:", "arch: Field", id="no-arch"),
        pytest.param(GPU.format(name="other"), "name:", "must equal the file name", id="name-mismatch"),
    ],
)
def test_a_bad_file_is_refused_at_its_line(tmp_path: Path, text: str, at: str, reason: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path)
    line = _line_of(text, at)
    assert str(info.value).startswith(f"{path}:{line}: "), str(info.value)
    assert reason in str(info.value)


def test_a_class_defined_twice_is_refused(tmp_path: Path) -> None:
    (tmp_path / "cpu-x86_64.yaml").write_text("# my own\n" + CPU.format(name="cpu-x86_64"))
    with pytest.raises(CatalogError, match=r"cpu-x86_64.yaml:2: class 'cpu-x86_64' is already defined in .*targets"):
        load_catalog(tmp_path)
