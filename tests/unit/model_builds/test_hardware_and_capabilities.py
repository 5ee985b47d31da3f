"""Host detection from recorded real outputs, and what a host may build as a result."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.capabilities import builder_info, detect_builder
from model_builds.hardware import NVIDIA_SMI_QUERY, HostHardware, detect_host, jetpack_for_l4t, parse_tegra_release
from model_builds.kinds import ONNX_KINDS
from model_builds.protocol import BuilderInfo, BuildSpec

# Recorded real outputs (nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader; Jetson files).
SMI_L4 = "NVIDIA L4, 8.9, 535.129.03\n"
SMI_H100 = "NVIDIA H100 80GB HBM3, 9.0, 550.54.15\n"
TEGRA_ORIN_JP61 = (
    "# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64, "
    "DATE: Fri Sep 13 04:36:44 UTC 2024\n# KERNEL_VARIANT: oot\nTARGET_USERSPACE_LIB_DIR=nvidia\n"
    "TARGET_USERSPACE_LIB_DIR_PATH=usr/lib/aarch64-linux-gnu/nvidia\n"
)
TEGRA_XAVIER_JP512 = (
    "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023\n"
)
MEMINFO = "MemTotal:       65536000 kB\nMemFree:        1000 kB\n"


def files(mapping: dict[str, str]):  # type: ignore[no-untyped-def]
    return lambda path: mapping.get(str(path))


@pytest.mark.parametrize(
    ("l4t", "jetpack"),
    [("36.4.3", "6.2"), ("36.4.0", "6.1"), ("36.3.0", "6.0"), ("35.4.1", "5.1.2"), ("35.2.1", "5.1"), ("32.7.4", None)],
)
def test_jetpack_from_l4t(l4t: str, jetpack: str | None) -> None:
    assert jetpack_for_l4t(l4t) == jetpack


@pytest.mark.parametrize(
    ("tegra", "model", "expected"),
    [
        pytest.param(TEGRA_ORIN_JP61, "NVIDIA Jetson Orin NX Engineering Reference Developer Kit\x00",
                     ("jetson-orin", "8.7", "36.4.0", "6.1"), id="orin-jp61"),
        pytest.param(TEGRA_XAVIER_JP512, "Jetson-AGX\x00",
                     ("jetson-orin", "8.7", "35.4.1", "5.1.2"), id="r35-unknown-board"),
        pytest.param(TEGRA_XAVIER_JP512, "NVIDIA Jetson Xavier NX Developer Kit\x00",
                     ("jetson-xavier", "7.2", "35.4.1", "5.1.2"), id="xavier-jp512"),
    ],
)  # fmt: skip
def test_a_jetson_is_read_from_its_release_file(tegra: str, model: str, expected: tuple[str, ...]) -> None:
    found = {"/etc/nv_tegra_release": tegra, "/proc/device-tree/model": model, "/proc/meminfo": MEMINFO}
    host = detect_host(run=lambda argv: None, read=files(found), machine="aarch64", tensorrt_version=lambda: "10.3.0")
    assert (host.gpu_class, host.compute_capability, host.l4t_version, host.jetpack_version) == expected
    assert host.gpu_present and host.tensorrt_version == "10.3.0" and host.memory_mb == 64000
    assert parse_tegra_release(tegra) == expected[2]


def test_a_discrete_gpu_is_read_from_nvidia_smi() -> None:
    host = detect_host(
        run=lambda argv: SMI_H100 if argv == NVIDIA_SMI_QUERY else None, read=files({}), machine="x86_64",
        tensorrt_version=lambda: None,
    )  # fmt: skip
    assert (host.gpu_class, host.gpu_name, host.compute_capability, host.driver_version) == (
        "dgpu-hopper", "NVIDIA H100 80GB HBM3", "9.0", "550.54.15"
    )  # fmt: skip


def test_no_gpu_means_the_cpu_class() -> None:
    host = detect_host(run=lambda argv: None, read=files({}), machine="aarch64", tensorrt_version=lambda: None)
    assert (host.gpu_class, host.gpu_present, host.compute_capability) == ("cpu-aarch64", False, None)


L4 = HostHardware("dgpu-ada", "x86_64", True, "NVIDIA L4", "8.9", "535.129.03", tensorrt_version="10.3.0")


@pytest.mark.parametrize(
    ("host", "has_trt", "plans", "reason"),
    [
        pytest.param(L4, True, True, None, id="gpu-and-tensorrt"),
        pytest.param(L4, False, False, "tensorrt package is not installed", id="no-tensorrt"),
        pytest.param(HostHardware("cpu-x86_64", "x86_64", False), True, False, "no NVIDIA GPU", id="no-gpu"),
    ],
)
def test_what_a_builder_can_build(host: HostHardware, has_trt: bool, plans: bool, reason: str | None) -> None:
    info = builder_info("b1", "h", host, has_trt)
    assert info.kinds[:3] == ONNX_KINDS and (ArtifactKind.TENSORRT_PLAN in info.kinds) == plans
    assert (reason is None) == (info.reasons == ()) and all(reason in r for r in info.reasons if reason)
    assert BuilderInfo(**info.as_dict()) == info


def test_a_plan_builder_takes_only_its_own_compute_capability_and_tensorrt() -> None:
    info = builder_info("b1", "h", L4, True)
    plan = ArtifactKind.TENSORRT_PLAN
    assert info.can_build(BuildSpec("dgpu-ada", plan, Precision.FP16, "8.9", "10.3.0"))
    assert not info.can_build(BuildSpec("dgpu-ada", plan, Precision.FP16, "8.9", "10.8.0"))
    assert not info.can_build(BuildSpec("dgpu-ampere", plan, Precision.FP16, "8.6", "10.3.0"))
    assert info.can_build(BuildSpec("jetson-orin", ArtifactKind.ONNX_INT8_QDQ, Precision.INT8))


def test_this_host_without_tensorrt_builds_onnx_kinds_only(tmp_path: Path) -> None:
    info = detect_builder("me", has_tensorrt=lambda: False)
    assert info.builder_id == "me" and info.kinds == ONNX_KINDS
    assert info.reasons and info.tensorrt_version is None
