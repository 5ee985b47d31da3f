"""Pure pieces of the agent: hardware parsing and mapping, provider choice, reconcile, self-test, telemetry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from edge_agent.adapters.hardware import (
    NVIDIA_SMI_QUERY,
    class_for_compute_capability,
    cpu_class,
    detect_hardware,
    parse_nvidia_smi,
    parse_tegra_release,
)
from edge_agent.adapters.host_metrics import parse_cpu_times, parse_memory_percent
from edge_agent.core.errors import SelfTestError
from edge_agent.core.journal import JournalState, SlotRecord
from edge_agent.core.providers import choose_providers
from edge_agent.core.reconcile import DecisionKind, plan
from edge_agent.core.selftest import compare, load_case
from edge_agent.core.telemetry import RequestWindow
from edge_agent.protocol import DesiredState
from tests.unit.agent.builders import build_version

# Recorded real outputs of `nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader`.
SMI_H100 = "NVIDIA H100 80GB HBM3, 9.0, 550.54.15\n"
SMI_TWO_3090 = "NVIDIA GeForce RTX 3090, 8.6, 535.104.05\nNVIDIA GeForce RTX 3090, 8.6, 535.104.05\n"
SMI_T4 = "Tesla T4, 7.5, 470.182.03\n"
SMI_L4 = "NVIDIA L4, 8.9, 535.129.03\n"
SMI_A100 = "NVIDIA A100-SXM4-40GB, 8.0, 525.85.12\n"
SMI_FAILED = "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n"
# /etc/nv_tegra_release on JetPack 6 (Orin) and JetPack 5 (Xavier).
TEGRA_ORIN = (
    "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, "
    "DATE: Fri Jul 19 23:24:25 UTC 2024\n"
)
TEGRA_XAVIER = (
    "# R35 (release), REVISION: 4.1, GCID: 33958178, BOARD: t186ref, EABI: aarch64, "
    "DATE: Tue Aug  1 19:57:35 UTC 2023\n"
)


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        pytest.param(SMI_H100, [("NVIDIA H100 80GB HBM3", "9.0", "dgpu-hopper")], id="h100"),
        pytest.param(SMI_TWO_3090, [("NVIDIA GeForce RTX 3090", "8.6", "dgpu-ampere")] * 2, id="two-3090"),
        pytest.param(SMI_T4, [("Tesla T4", "7.5", "dgpu-turing")], id="t4"),
        pytest.param(SMI_L4, [("NVIDIA L4", "8.9", "dgpu-ada")], id="l4"),
        pytest.param(SMI_A100, [("NVIDIA A100-SXM4-40GB", "8.0", "dgpu-ampere")], id="a100"),
        pytest.param(SMI_FAILED, [], id="driver-not-loaded"),
        pytest.param("", [], id="empty"),
    ],
)
def test_nvidia_smi_output_is_parsed_and_mapped(output, expected):
    gpus = parse_nvidia_smi(output)
    assert [
        (g.name, g.compute_capability, class_for_compute_capability(g.compute_capability)) for g in gpus
    ] == expected


@pytest.mark.parametrize(
    ("cc", "gpu_class"),
    [
        ("7.2", "jetson-xavier"),
        ("8.7", "jetson-orin"),
        ("7.5", "dgpu-turing"),
        ("8.0", "dgpu-ampere"),
        ("8.6", "dgpu-ampere"),
        ("8.9", "dgpu-ada"),
        ("9.0", "dgpu-hopper"),
        ("6.1", None),
    ],
)
def test_compute_capability_to_class(cc, gpu_class):
    assert class_for_compute_capability(cc) == gpu_class


def test_tegra_release_and_cpu_classes():
    assert parse_tegra_release(TEGRA_ORIN) == "36.3.0"
    assert parse_tegra_release(TEGRA_XAVIER) == "35.4.1"
    assert parse_tegra_release("garbage") is None
    assert (cpu_class("x86_64"), cpu_class("aarch64"), cpu_class("arm64")) == (
        "cpu-x86_64",
        "cpu-aarch64",
        "cpu-aarch64",
    )


def fake_files(files: dict[str, str]):
    return lambda path: files.get(str(path))


def test_detects_a_discrete_gpu_from_nvidia_smi():
    detected = detect_hardware(
        ["CUDAExecutionProvider", "CPUExecutionProvider"],
        "1.20",
        run=lambda argv: SMI_H100 if argv == NVIDIA_SMI_QUERY else None,
        read=fake_files({}),
        machine="x86_64",
    )
    assert detected.gpu_present
    assert (detected.facts.gpu_class, detected.facts.compute_capability, detected.facts.driver_version) == (
        "dgpu-hopper",
        "9.0",
        "550.54.15",
    )


def test_no_nvidia_smi_means_cpu_class():
    detected = detect_hardware(
        ["CPUExecutionProvider"], "1.20", run=lambda argv: None, read=fake_files({}), machine="aarch64"
    )
    assert not detected.gpu_present and detected.facts.gpu_class == "cpu-aarch64"


def test_detects_a_jetson_from_its_release_file():
    files = {"/etc/nv_tegra_release": TEGRA_ORIN, "/proc/device-tree/model": "NVIDIA Jetson AGX Orin Developer Kit\x00"}
    detected = detect_hardware([], None, run=lambda argv: None, read=fake_files(files), machine="aarch64")
    assert detected.gpu_present
    assert (detected.facts.gpu_class, detected.facts.l4t_version, detected.facts.compute_capability) == (
        "jetson-orin",
        "36.3.0",
        "8.7",
    )
    assert detected.facts.gpu_name == "NVIDIA Jetson AGX Orin Developer Kit"


def test_gpu_class_override_wins():
    detected = detect_hardware([], None, "dgpu-ada", run=lambda argv: None, read=fake_files({}), machine="x86_64")
    assert detected.facts.gpu_class == "dgpu-ada"


GPU_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.parametrize(
    ("gpu", "available", "requested", "chosen"),
    [
        pytest.param(False, GPU_BUILD, [], ["CPUExecutionProvider"], id="gpu-build-without-gpu"),
        pytest.param(True, GPU_BUILD, [], GPU_BUILD, id="gpu"),
        pytest.param(
            True,
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            [],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            id="no-trt",
        ),
        pytest.param(
            True,
            GPU_BUILD,
            ["CUDAExecutionProvider"],
            ["CUDAExecutionProvider", "CPUExecutionProvider"],
            id="requested",
        ),
        pytest.param(False, ["CPUExecutionProvider"], [], ["CPUExecutionProvider"], id="cpu-build"),
    ],
)
def test_provider_choice(gpu, available, requested, chosen):
    assert choose_providers(gpu, available, requested) == chosen


def journal_with_v1(tmp_path: Path) -> JournalState:
    v1 = build_version(tmp_path, 1)
    record = SlotRecord(name="lin", version=1, build_id=v1.build_id, slot="s", model_sha256=v1.artifact.sha256)
    return JournalState(applied_generation=3, failed_generation=5, active={"lin": record})


def desired(generation: int, models, device_id: str = "dev-1") -> DesiredState:
    return DesiredState(
        device_id=device_id, generation=generation, issued_at=datetime(2025, 1, 1, tzinfo=UTC), models=models
    )


@pytest.mark.parametrize(
    ("generation", "version", "device", "kind", "install", "reason"),
    [
        pytest.param(7, 2, "dev-1", DecisionKind.APPLY, ["lin"], "", id="newer-version"),
        pytest.param(7, 1, "dev-1", DecisionKind.APPLY, [], "", id="same-model-newer-generation"),
        pytest.param(3, 2, "dev-1", DecisionKind.NOOP, [], "already applied", id="applied"),
        pytest.param(2, 2, "dev-1", DecisionKind.REJECT, [], "not above", id="older"),
        pytest.param(5, 2, "dev-1", DecisionKind.NOOP, [], "already failed", id="failed-generation"),
        pytest.param(4, 2, "dev-1", DecisionKind.NOOP, [], "already failed", id="below-failed"),
        pytest.param(7, 2, "dev-2", DecisionKind.REJECT, [], "dev-2", id="other-device"),
    ],
)
def test_plan(tmp_path, generation, version, device, kind, install, reason):
    decision = plan(desired(generation, [build_version(tmp_path, version)], device), journal_with_v1(tmp_path), "dev-1")
    assert decision.kind is kind
    assert [m.name for m in decision.install] == install
    assert reason in decision.reason


def test_plan_removes_models_no_longer_wanted(tmp_path):
    decision = plan(desired(9, []), journal_with_v1(tmp_path), "dev-1")
    assert (decision.kind, decision.remove) == (DecisionKind.APPLY, ("lin",))


@pytest.mark.parametrize(
    ("actual", "problem"),
    [
        pytest.param({"Y": np.array([1.0, 2.0])}, None, id="equal"),
        pytest.param({"Y": np.array([1.0, 2.00001])}, None, id="within-tolerance"),
        pytest.param({"Y": np.array([1.0, 2.5])}, "differs from the reference by up to 0.5", id="too-far"),
        pytest.param({"Y": np.array([1.0])}, "shape", id="shape"),
        pytest.param({"Z": np.array([1.0, 2.0])}, "no output 'Y'", id="missing"),
    ],
)
def test_selftest_compare(actual, problem):
    result = compare(actual, {"Y": np.array([1.0, 2.0])}, atol=1e-4, rtol=1e-3)
    assert result == problem or (problem is not None and result is not None and problem in result)


def test_selftest_archive_must_hold_inputs_and_outputs(tmp_path):
    path = tmp_path / "t.npz"
    np.savez(path, **{"input:X": np.zeros(2)})
    with pytest.raises(SelfTestError, match="output:NAME"):
        load_case(path)
    (tmp_path / "bad.npz").write_bytes(b"nope")
    with pytest.raises(SelfTestError, match="not a readable"):
        load_case(tmp_path / "bad.npz")


def test_telemetry_window_with_an_injected_clock():
    window = RequestWindow(window_s=10)
    for i in range(1, 101):
        window.record(now=float(i) / 100, name="m", version=1, latency_ms=float(i), ok=True)
    window.record(now=1.0, name="m", version=1, latency_ms=0, ok=False)
    window.record(now=1.0, name="m", version=2, latency_ms=7, ok=True)

    [v1, v2] = window.snapshot(now=5.0)
    assert (v1.requests, v1.errors, v1.p50_ms, v1.p99_ms) == (101, 1, 50.0, 99.0)
    assert (v2.version, v2.requests, v2.p50_ms) == (2, 1, 7.0)
    assert window.snapshot(now=10.5)[0].requests == 51  # samples at or before 0.5 s left the window
    assert window.snapshot(now=11.0) == []


def test_host_metrics_parsers():
    assert parse_cpu_times("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3 4\n") == (200, 1000)
    assert parse_memory_percent("MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 250 kB\n") == 75.0
    assert parse_memory_percent("nonsense") is None
