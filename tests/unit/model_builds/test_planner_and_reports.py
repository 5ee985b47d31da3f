"""Pure decisions: which builds a request means, their keys, the tolerance policy and its re-judging."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.catalog import CatalogError, load_catalog
from model_builds.planner import build_key, plan_builds
from model_builds.protocol import BuildOptions, BuildSpec, ProfileShape, Tolerances, default_tolerances, wire
from model_builds.reports import batch_latency, judge, parity

CATALOG = load_catalog()


def test_a_plan_expands_per_compute_capability_and_tensorrt_version() -> None:
    specs, skipped = plan_builds(CATALOG, ["dgpu-ampere", "cpu-x86_64"], [ArtifactKind.TENSORRT_PLAN], [Precision.FP16])
    assert [(s.target, s.compute_capability, s.tensorrt_version) for s in specs] == [
        ("dgpu-ampere", cc, trt) for cc in ("8.0", "8.6") for trt in ("10.3.0", "10.8.0", "10.13.0")
    ]
    assert [(s.target, s.reason) for s in skipped] == [
        ("cpu-x86_64", "class cpu-x86_64 does not allow kind tensorrt-plan (allowed: ['onnx', 'onnx-int8-qdq'])")
    ]


@pytest.mark.parametrize(
    ("target", "kinds", "precisions", "built", "skipped"),
    [
        pytest.param("cpu-x86_64", [ArtifactKind.ONNX, ArtifactKind.ONNX_INT8_QDQ], None, 2, 0, id="natural"),
        pytest.param("cpu-x86_64", [ArtifactKind.ONNX_FP16], None, 0, 1, id="cpu-has-no-fp16"),
        pytest.param(
            "jetson-xavier", [ArtifactKind.TENSORRT_PLAN], [Precision.FP32, Precision.INT8], 2, 0, id="xavier"
        ),
        pytest.param("dgpu-ada", [ArtifactKind.ONNX], [Precision.FP16], 0, 1, id="onnx-kind-is-fp32-only"),
    ],
)
def test_plan_builds(
    target: str, kinds: list[ArtifactKind], precisions: list[Precision] | None, built: int, skipped: int
) -> None:
    specs, left_out = plan_builds(CATALOG, [target], kinds, precisions)
    assert (len(specs), len(left_out)) == (built, skipped)


def test_an_unknown_target_is_named() -> None:
    with pytest.raises(CatalogError, match="unknown target"):
        plan_builds(CATALOG, ["tpu-v5"], [ArtifactKind.ONNX])


def test_the_key_changes_with_what_decides_the_bytes_only() -> None:
    plan = BuildSpec("dgpu-ada", ArtifactKind.TENSORRT_PLAN, Precision.FP16, "8.9", "10.3.0")
    onnx = BuildSpec("dgpu-ada", ArtifactKind.ONNX, Precision.FP32)
    base = build_key("a" * 64, plan, BuildOptions())
    assert base == build_key("a" * 64, plan, BuildOptions())
    assert base != build_key("b" * 64, plan, BuildOptions())
    assert base != build_key("a" * 64, plan, BuildOptions(workspace_mb=2048))
    assert base != build_key("a" * 64, plan, BuildOptions(hardware_compatibility_level="ampere+"))
    profiles = {"x": ProfileShape((1, 8), (4, 8), (8, 8))}
    assert base != build_key("a" * 64, plan, BuildOptions(profiles=profiles))
    # A portable ONNX build does not depend on TensorRT's workspace: same key, no rebuild.
    assert build_key("a" * 64, onnx, BuildOptions()) == build_key("a" * 64, onnx, BuildOptions(workspace_mb=64))


def test_tolerances_default_by_precision_and_take_per_model_overrides() -> None:
    assert Tolerances.from_overrides(Precision.INT8, None) == Tolerances(0.25, 0.25, 0.98, 0.9)
    custom = Tolerances.from_overrides(Precision.FP16, {"fp16": {"atol": 0.05}, "int8": {"atol": 1}})
    assert custom == Tolerances(0.05, 1e-2, 0.999, None)
    with pytest.raises(ValueError, match="unknown tolerance"):
        Tolerances.from_overrides(Precision.FP16, {"fp16": {"atoll": 0.05}})


REFERENCE = {"logits": np.array([[2.0, 1.0, 0.1], [0.1, 3.0, 1.0], [1.0, 0.2, 2.5], [0.5, 0.4, 0.3]], np.float32)}


def test_identical_outputs_pass_with_perfect_figures() -> None:
    report = parity(REFERENCE, REFERENCE, Tolerances(1e-4, 1e-3, 0.99999))
    assert report.passed and report.reasons == ()
    (out,) = report.outputs
    assert (out.max_abs, round(out.cosine, 6), out.top1_agreement) == (0.0, 1.0, 1.0)


def test_a_wrong_candidate_fails_with_every_reason() -> None:
    wrong = {"logits": REFERENCE["logits"][:, ::-1].copy()}
    report = parity(wrong, REFERENCE, Tolerances(0.25, 0.25, 0.98, 0.9))
    assert not report.passed
    assert [r.split(":")[1].split()[0:2] for r in report.reasons] == [
        ["max", "abs"],
        ["cosine", "similarity"],
        ["top-1", "agreement"],
    ]


def test_missing_or_reshaped_outputs_fail() -> None:
    tol = Tolerances(1, 1, 0)
    assert parity({}, REFERENCE, tol).reasons == ("output 'logits': the candidate does not produce it",)
    reshaped = {"logits": REFERENCE["logits"].reshape(2, 6)}
    assert "shape [2, 6] != reference [4, 3]" in parity(reshaped, REFERENCE, tol).reasons[0]


def test_judge_reapplies_the_policy_to_reported_figures_not_the_reported_verdict() -> None:
    noisy = {"logits": REFERENCE["logits"] + np.float32(0.05)}
    reported = wire(parity(noisy, REFERENCE, Tolerances(0.25, 0.25, 0.98, 0.9)))
    assert reported["passed"]
    strict = judge(reported, Tolerances(1e-4, 1e-3, 0.99999))
    assert not strict.passed and "max abs error 0.05" in strict.reasons[0]
    assert judge({"passed": True}, Tolerances(1, 1, 0)).passed is False
    assert judge({"outputs": []}, Tolerances(1, 1, 0)).reasons == ("the parity report has no outputs",)


def test_latency_percentiles_in_milliseconds() -> None:
    figures = batch_latency(4, [0.001] * 98 + [0.010, 0.020])
    assert (figures.batch, figures.runs, figures.p50_ms) == (4, 100, pytest.approx(1.0))
    assert 9.0 < figures.p99_ms < 20.0
    with pytest.raises(ValueError):
        batch_latency(1, [])


@pytest.mark.parametrize(
    "report",
    [
        pytest.param({}, id="no-outputs-key"),
        pytest.param({"outputs": "garbage"}, id="outputs-a-string"),
        pytest.param({"outputs": ["x"]}, id="outputs-of-strings"),
        pytest.param({"outputs": [{"name": "y"}]}, id="missing-figures"),
        pytest.param({"outputs": [{"name": "y", "max_abs": "lots"}]}, id="figure-not-a-number"),
        pytest.param({"outputs": [], "reasons": "not a list"}, id="reasons-a-string"),
    ],
)
def test_judge_refuses_a_malformed_report_instead_of_crashing(report: dict[str, object]) -> None:
    verdict = judge(report, default_tolerances(Precision.FP32))
    assert not verdict.passed
    assert "malformed" in verdict.reasons[0]
