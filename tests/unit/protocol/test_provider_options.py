"""The one provider-option resolver (edge_agent/protocol/provider_options.py): the control plane's step and the
agent's step of the same path, table-driven."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.protocol import HardwareFacts
from edge_agent.protocol.provider_options import for_device, on_device
from edge_agent.protocol.vocabulary import ExecutionProvider, Precision

TRT = ExecutionProvider.TENSORRT
TEMPLATE = "{data_dir}/trt/{gpu_class}/sm{compute_capability}-trt{tensorrt_version}"
ORIN = HardwareFacts(gpu_class="jetson-orin", arch="aarch64", compute_capability="8.7", tensorrt_version="10.3.0")
CPU_HOST = HardwareFacts(gpu_class="cpu-x86_64", arch="x86_64")


@pytest.mark.parametrize(
    ("flags", "precision", "expected"),
    [
        pytest.param({"trt_fp16_enable": "x", "trt_int8_enable": "x"}, Precision.FP32, ("false", "false"), id="fp32"),
        pytest.param({"trt_fp16_enable": "x", "trt_int8_enable": "x"}, Precision.FP16, ("true", "false"), id="fp16"),
        pytest.param({"trt_fp16_enable": "x", "trt_int8_enable": "x"}, Precision.INT8, ("false", "true"), id="int8"),
        pytest.param({}, Precision.INT8, (None, None), id="flags-absent-stay-absent"),
        pytest.param({"trt_int8_enable": "true"}, Precision.FP16, (None, "false"), id="only-named-flags"),
    ],
)
def test_precision_flags_follow_the_artifacts_precision(
    flags: dict[str, str], precision: Precision, expected: tuple[str | None, str | None]
) -> None:
    trt = for_device({TRT: flags}, "jetson-orin", ORIN, precision)[TRT]
    assert (trt.get("trt_fp16_enable"), trt.get("trt_int8_enable")) == expected


@pytest.mark.parametrize(
    ("provider", "facts", "path"),
    [
        pytest.param(TRT, ORIN, "{data_dir}/trt/jetson-orin/sm8.7-trt10.3.0", id="reported-hardware"),
        pytest.param(TRT, None, "{data_dir}/trt/jetson-orin/smnone-trtnone", id="hardware-not-reported"),
        pytest.param(ExecutionProvider.CUDA, ORIN, "{data_dir}/trt/jetson-orin/sm8.7-trt10.3.0", id="other-provider"),
    ],
)
def test_the_control_plane_fills_hardware_and_leaves_the_data_dir(
    provider: ExecutionProvider, facts: HardwareFacts | None, path: str
) -> None:
    options = {provider: {"trt_engine_cache_path": TEMPLATE, "trt_fp16_enable": "true"}}
    filled = for_device(options, "jetson-orin", facts, Precision.FP32)
    assert filled[provider]["trt_engine_cache_path"] == path
    # Only the TensorRT EP's flags follow the precision; another provider's options pass through.
    assert filled[provider]["trt_fp16_enable"] == ("false" if provider is TRT else "true")


@pytest.mark.parametrize(
    ("value", "facts", "resolved"),
    [
        pytest.param(TEMPLATE, ORIN, "/data/trt/jetson-orin/sm8.7-trt10.3.0", id="fully-templated"),
        pytest.param("{data_dir}/trt", ORIN, "/data/trt/jetson-orin-sm87-trt10.3.0", id="unkeyed-gets-a-tag"),
        pytest.param("trt", CPU_HOST, "/data/trt/cpu-x86_64-nogpu-trtnone", id="relative-in-data-dir"),
        # What the control plane already filled in is not keyed any more: the agent adds its own tag (as shipped).
        pytest.param(
            "{data_dir}/trt/jetson-orin/sm8.7-trt10.3.0",
            ORIN,
            "/data/trt/jetson-orin/sm8.7-trt10.3.0/jetson-orin-sm87-trt10.3.0",
            id="filled-by-the-control-plane",
        ),
    ],
)
def test_the_agent_keys_every_cache_directory_by_its_hardware(value: str, facts: HardwareFacts, resolved: str) -> None:
    options = {TRT: {"trt_engine_cache_path": value, "trt_dla_core": "{gpu_class}"}}
    out = on_device(options, Path("/data"), facts)[TRT]
    assert out == {"trt_engine_cache_path": resolved, "trt_dla_core": facts.gpu_class}
