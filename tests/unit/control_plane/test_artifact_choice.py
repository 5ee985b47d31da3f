"""Which artifact a device gets: plans only where their hardware key accepts the device, the class's ONNX as
fallback, the rollout's kind/precision wish, never a rejected or failed build; and per-device provider options."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from control_plane.domain.artifacts import ArtifactWish, NoArtifact, choose_artifact, provider_options
from control_plane.domain.registry import Build, BuildStatus
from edge_agent.protocol import HardwareFacts
from edge_agent.protocol.vocabulary import ArtifactKind, Precision

NOW = datetime(2026, 1, 1, tzinfo=UTC)
PREFERENCE = ("tensorrt-plan", "onnx")


def build(
    build_id: str,
    kind: str = "onnx",
    precision: str = "fp32",
    status: BuildStatus = BuildStatus.SUCCEEDED,
    cc: str | None = None,
    trt: str | None = None,
    target: str = "jetson-orin",
    age_s: int = 0,
) -> Build:
    key = {"gpu_class": target, "compute_capability": cc, "tensorrt_version": trt} if kind == "tensorrt-plan" else None
    return Build(
        id=build_id, model="m", version=1, target=target, precision=Precision(precision),
        artifact_kind=ArtifactKind(kind), status=status,
        artifact_sha256="a" * 64, artifact_size=1, error=None, created_at=NOW - timedelta(seconds=age_s), manifest={},
        manifest_signature="s", compute_capability=cc, tensorrt_version=trt, hardware_key=key,
    )  # fmt: skip


def orin(cc: str | None = "8.7", trt: str | None = "10.3.0") -> HardwareFacts:
    return HardwareFacts(gpu_class="jetson-orin", arch="aarch64", compute_capability=cc, tensorrt_version=trt)


ONNX = build("onnx32")
FP16 = build("onnx16", "onnx-fp16", "fp16")
PLAN_103 = build("plan103", "tensorrt-plan", cc="8.7", trt="10.3.0")
PLAN_862 = build("plan862", "tensorrt-plan", cc="8.7", trt="8.6.2")
PLAN_FP16 = build("plan16", "tensorrt-plan", "fp16", cc="8.7", trt="10.3.0")


@pytest.mark.parametrize(
    ("facts", "builds", "wish", "primary", "fallback"),
    [
        pytest.param(orin(), [ONNX, PLAN_103, PLAN_862], ArtifactWish(), "plan103", "onnx32", id="matching-plan"),
        pytest.param(orin(trt="8.6.2"), [ONNX, PLAN_103, PLAN_862], ArtifactWish(), "plan862", "onnx32",
                     id="plan-for-the-devices-tensorrt"),
        pytest.param(orin(trt="9.0.0"), [ONNX, PLAN_103], ArtifactWish(), "onnx32", None, id="no-plan-fits-onnx"),
        pytest.param(orin(cc=None, trt=None), [ONNX, PLAN_103], ArtifactWish(), "onnx32", None, id="no-gpu-onnx"),
        pytest.param(None, [ONNX, PLAN_103], ArtifactWish(), "onnx32", None, id="hardware-unknown-onnx"),
        pytest.param(orin(), [ONNX, PLAN_103, PLAN_FP16], ArtifactWish(precision="fp16"), "plan16", "onnx32",
                     id="fp16-plan-wished"),
        pytest.param(orin(), [ONNX, FP16, PLAN_103], ArtifactWish(kind="onnx-fp16"), "onnx16", None,
                     id="kind-wished-skips-plans"),
        pytest.param(orin(trt="9.0.0"), [ONNX, FP16], ArtifactWish(precision="fp16"), "onnx16", None,
                     id="fp16-wished-portable"),
        pytest.param(orin(), [PLAN_103], ArtifactWish(), "plan103", None, id="plan-without-onnx-has-no-fallback"),
        pytest.param(orin(), [ONNX, build("plan-bad", "tensorrt-plan", status=BuildStatus.REJECTED, cc="8.7",
                                            trt="10.3.0")], ArtifactWish(), "onnx32", None, id="rejected-plan-skipped"),
        pytest.param(orin(), [build("old", age_s=60), ONNX], ArtifactWish(), "onnx32", None, id="newest-wins"),
    ],
)  # fmt: skip
def test_choice(
    facts: HardwareFacts | None, builds: list[Build], wish: ArtifactWish, primary: str, fallback: str | None
) -> None:
    pick = choose_artifact("jetson-orin", facts, PREFERENCE, builds, wish)
    assert (pick.primary.id, pick.fallback.id if pick.fallback else None) == (primary, fallback)


@pytest.mark.parametrize(
    ("builds", "wish", "message"),
    [
        pytest.param([build("x", status=BuildStatus.REJECTED)], ArtifactWish(), r"no succeeded onnx build \(fp32\)",
                     id="only-rejected"),
        pytest.param([build("x", status=BuildStatus.FAILED)], ArtifactWish(), "jetson-orin", id="only-failed"),
        pytest.param([ONNX], ArtifactWish(kind="tensorrt-plan"), "TensorRT 10.3.0", id="plan-wished-none-fits"),
        pytest.param([ONNX], ArtifactWish(precision="int8"), "onnx-int8-qdq", id="int8-missing"),
        pytest.param([build("cpu", target="cpu-x86_64")], ArtifactWish(), "jetson-orin", id="other-class-only"),
    ],
)  # fmt: skip
def test_nothing_fits_names_what_is_missing(builds: list[Build], wish: ArtifactWish, message: str) -> None:
    with pytest.raises(NoArtifact, match=message):
        choose_artifact("jetson-orin", orin(), PREFERENCE, builds, wish)


def test_provider_options_are_keyed_by_the_devices_hardware() -> None:
    options = {
        "TensorrtExecutionProvider": {
            "trt_fp16_enable": "false",
            "trt_int8_enable": "true",
            "trt_engine_cache_path": "{data_dir}/trt/{gpu_class}/sm{compute_capability}-trt{tensorrt_version}",
        },
        "CPUExecutionProvider": {},
    }
    filled = provider_options(options, "jetson-orin", orin(), Precision.FP16)
    trt = filled["TensorrtExecutionProvider"]
    assert trt["trt_engine_cache_path"] == "{data_dir}/trt/jetson-orin/sm8.7-trt10.3.0"
    assert (trt["trt_fp16_enable"], trt["trt_int8_enable"]) == ("true", "false")
    assert filled["CPUExecutionProvider"] == {}
    unknown = provider_options(options, "jetson-orin", None, Precision.FP32)["TensorrtExecutionProvider"]
    assert unknown["trt_engine_cache_path"].endswith("smnone-trtnone")
