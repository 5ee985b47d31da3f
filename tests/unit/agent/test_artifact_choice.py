"""Which artifact a device runs (primary plan or ONNX fallback), and the provider options it runs it with."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from edge_agent.core.artifacts import Choice, Refusal, choose_artifact
from edge_agent.core.journal import JournalState, SlotRecord
from edge_agent.core.providers import providers_for
from edge_agent.core.reconcile import plan
from edge_agent.protocol import DesiredState, HardwareFacts, HardwareKey
from edge_agent.protocol.provider_options import on_device as resolve_provider_options
from tests.unit.agent.builders import AMPERE_PLAN_KEY, build_version, with_plan

TRT_BUILD = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]


def device(
    gpu_class: str = "dgpu-ampere", cc: str | None = "8.6", trt: str | None = "10.3.0", providers=TRT_BUILD
) -> HardwareFacts:
    return HardwareFacts(
        gpu_class=gpu_class, arch="x86_64", compute_capability=cc, tensorrt_version=trt, available_providers=providers
    )


AMPERE_PLUS = HardwareKey(
    gpu_class="dgpu-ampere", compute_capability="8.0", tensorrt_version="10.3.0", hardware_compatibility_level="ampere+"
)


@pytest.mark.parametrize(
    ("key", "facts", "trt_ep", "fallback", "chosen", "reason"),
    [
        pytest.param(AMPERE_PLAN_KEY, device(), True, True, "b1-plan", None, id="match"),
        pytest.param(
            AMPERE_PLAN_KEY,
            device(cc="8.0"),
            True,
            True,
            "b1",
            "compute capability 8.6 / TensorRT 10.3.0, this device is dgpu-ampere 8.0 / TensorRT 10.3.0",
            id="other-compute-capability",
        ),
        pytest.param(
            AMPERE_PLAN_KEY,
            device(trt="10.8.0"),
            True,
            True,
            "b1",
            "built with TensorRT 10.3.0, this device has 10.8.0",
            id="other-tensorrt-version",
        ),
        pytest.param(
            AMPERE_PLAN_KEY,
            device(cc=None, trt=None, providers=["CPUExecutionProvider"]),
            False,
            True,
            "b1",
            "no GPU detected",
            id="no-gpu",
        ),
        pytest.param(
            AMPERE_PLAN_KEY,
            device(providers=["CUDAExecutionProvider", "CPUExecutionProvider"]),
            False,
            True,
            "b1",
            "needs onnxruntime's TensorrtExecutionProvider, and this onnxruntime offers only CUDAExecutionProvider",
            id="no-tensorrt-ep",
        ),
        pytest.param(
            None,
            device(cc=None, trt=None),
            True,
            True,
            "b1",
            "needs an NVIDIA GPU, and none was detected",
            id="unkeyed-plan-gpu-listed-but-absent",
        ),
        pytest.param(AMPERE_PLUS, device(cc="8.6"), True, True, "b1-plan", None, id="ampere-plus-on-8.6"),
        pytest.param(
            AMPERE_PLAN_KEY,
            device(gpu_class="jetson-orin", cc="8.7"),
            True,
            True,
            "b1",
            "built for GPU class dgpu-ampere, this device is jetson-orin",
            id="other-class",
        ),
    ],
)
def test_choose_artifact(tmp_path, key, facts, trt_ep, fallback, chosen, reason):
    choice = choose_artifact(with_plan(build_version(tmp_path, 1), key, atol=0.5, rtol=0.25), facts, trt_ep)

    assert isinstance(choice, Choice)
    assert choice.build_id == chosen
    if reason is None:
        assert (choice.kind, choice.fallback_reason, choice.atol) == ("tensorrt-plan", None, 1e-4)
    else:
        assert choice.kind == "onnx" and reason in (choice.fallback_reason or "")
        assert (choice.atol, choice.rtol) == (0.5, 0.25)  # the fallback's own tolerances


def test_no_fallback_refuses_with_the_reason(tmp_path):
    assignment = with_plan(build_version(tmp_path, 1), fallback=False)

    refusal = choose_artifact(assignment, device(cc="8.7", gpu_class="dgpu-ampere"), True)

    assert refusal == Refusal(
        "tensorrt-plan b1-plan built for dgpu-ampere compute capability 8.6 / TensorRT 10.3.0, this device is "
        "dgpu-ampere 8.7 / TensorRT 10.3.0 (built for compute capability 8.6, this GPU is 8.7), "
        "and no fallback was sent"
    )


def test_a_fallback_that_does_not_fit_either_is_refused(tmp_path):
    assignment = with_plan(build_version(tmp_path, 1))
    bad_fallback = assignment.fallback.model_copy(update={"artifact_kind": "tensorrt-plan"})  # type: ignore[union-attr]

    refusal = choose_artifact(assignment.model_copy(update={"fallback": bad_fallback}), device(cc=None), False)

    assert isinstance(refusal, Refusal) and "the fallback does not fit either" in refusal.reason


def test_a_plain_onnx_assignment_is_always_the_primary(tmp_path):
    choice = choose_artifact(build_version(tmp_path, 1), device(cc=None, providers=["CPUExecutionProvider"]), False)
    assert isinstance(choice, Choice) and (choice.build_id, choice.fallback_reason) == ("b1", None)


@pytest.mark.parametrize(
    ("kind", "available", "chosen"),
    [
        pytest.param("tensorrt-plan", TRT_BUILD, ["TensorrtExecutionProvider"], id="plan-trt-only"),
        pytest.param("onnx", TRT_BUILD, TRT_BUILD, id="onnx-all-gpu"),
        pytest.param("onnx-int8-qdq", ["CPUExecutionProvider"], ["CPUExecutionProvider"], id="qdq-cpu"),
    ],
)
def test_providers_per_kind(kind, available, chosen):
    assert providers_for(kind, True, available) == chosen


TEMPLATE = "{data_dir}/trt-cache/{gpu_class}/sm{compute_capability}-trt{tensorrt_version}"


def test_data_dir_and_hardware_are_substituted_in_provider_options():
    options = {"TensorrtExecutionProvider": {"trt_engine_cache_path": TEMPLATE, "trt_fp16_enable": "true"}}

    resolved = resolve_provider_options(options, Path("/var/lib/agent"), device())

    assert resolved == {
        "TensorrtExecutionProvider": {
            "trt_engine_cache_path": "/var/lib/agent/trt-cache/dgpu-ampere/sm8.6-trt10.3.0",
            "trt_fp16_enable": "true",
        }
    }


@pytest.mark.parametrize(
    "template",
    [
        pytest.param(TEMPLATE, id="template-with-hardware"),
        pytest.param("{data_dir}/trt-cache", id="template-without-hardware"),
        pytest.param("trt-cache", id="relative"),
    ],
)
def test_engine_cache_paths_differ_whenever_the_hardware_differs(template):
    options = {"TensorrtExecutionProvider": {"trt_engine_cache_path": template}}
    hosts = [device(), device(cc="8.0"), device(trt="10.8.0"), device(gpu_class="jetson-orin", cc="8.7")]

    paths = [
        resolve_provider_options(options, Path("/data"), facts)["TensorrtExecutionProvider"]["trt_engine_cache_path"]
        for facts in hosts
    ]

    assert len(set(paths)) == len(hosts)
    assert all(path.startswith("/data/trt-cache") for path in paths)


@pytest.mark.parametrize(
    ("facts", "trt_ep", "install"),
    [
        pytest.param(device(cc=None, trt=None), False, [], id="still-refused-keeps-the-fallback"),
        pytest.param(device(), True, ["lin"], id="hardware-now-fits-installs-the-plan"),
    ],
)
def test_reconcile_keeps_a_fallback_only_while_it_is_still_the_choice(tmp_path, facts, trt_ep, install):
    assignment = with_plan(build_version(tmp_path, 1))
    fallback = assignment.fallback
    assert fallback is not None
    record = SlotRecord(
        name="lin",
        version=1,
        build_id=fallback.build_id,
        slot="s",
        model_sha256=fallback.artifact.sha256,
        artifact_kind="onnx",
        fallback_reason="refused",
    )
    state = JournalState(applied_generation=1, active={"lin": record})
    desired = DesiredState(
        device_id="dev-1", generation=2, issued_at=datetime(2025, 1, 1, tzinfo=UTC), models=[assignment]
    )

    decision = plan(desired, state, "dev-1", lambda model: choose_artifact(model, facts, trt_ep))

    assert [m.name for m in decision.install] == install
