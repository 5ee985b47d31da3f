"""The builder protocol (model_builds/protocol.py): what travels between builders and the control plane, bounded,
and the same bytes as the hand-built dicts it replaced (build keys, parity figures)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.planner import build_key
from model_builds.protocol import (
    BuilderClaim,
    BuilderInfo,
    BuildFailure,
    BuildHeartbeat,
    BuildOptions,
    BuildReport,
    BuildSpec,
    BuildTask,
    OutputParity,
    ParityReport,
    ProfileShape,
    RemoteFile,
    default_tolerances,
    wire,
)

PLAN = BuildSpec("jetson-orin", ArtifactKind.TENSORRT_PLAN, Precision.INT8, "8.7", "10.3.0")
PROFILES = {"y": ProfileShape((1, 3), (4, 3), (8, 3)), "x": ProfileShape((1, 8), (4, 8), (8, 8))}
FILE = RemoteFile("http://cp/v1/artifacts/" + "a" * 64, "a" * 64, 10)


# Keys computed by the hand-written `as_dict` code this module replaced: a stored build must keep its key.
@pytest.mark.parametrize(
    ("spec", "options", "key"),
    [
        pytest.param(
            BuildSpec("cpu-x86_64", ArtifactKind.ONNX, Precision.FP32),
            BuildOptions(),
            "1d1918eaa6472e8541ed239923ed6c9e65e1007ba221649164bc75923f15373f",
            id="onnx-fp32",
        ),
        pytest.param(
            BuildSpec("cpu-x86_64", ArtifactKind.ONNX_INT8_QDQ, Precision.INT8),
            BuildOptions(calibration_sha256="c" * 64),
            "fb24612a5b28fe39b0feecd3f913843ba2c9ae0ad74c9e377ce784cd61372626",
            id="qdq-calibrated",
        ),
        pytest.param(
            BuildSpec("jetson-orin", ArtifactKind.TENSORRT_PLAN, Precision.FP16, "8.7", "10.3.0"),
            BuildOptions(workspace_mb=2048, hardware_compatibility_level="ampere+"),
            "7974a1980fe23ef1f2d2e5f8f175d1b6dc789cb2403172b84246349d44e53310",
            id="plan-fp16",
        ),
        pytest.param(
            PLAN,
            BuildOptions(profiles=PROFILES, calibration_sha256="d" * 64),
            "6be304dd56ae64964d6fd15823a4b0e88ffdff3490f3e3556da06f774e48411e",
            id="plan-int8-profiles",
        ),
    ],
)
def test_build_keys_are_unchanged(spec: BuildSpec, options: BuildOptions, key: str) -> None:
    assert build_key("a" * 64, spec, options) == key


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        pytest.param({}, BuildOptions(), id="nothing"),
        pytest.param({"workspace_mb": None, "profiles": {}}, BuildOptions(), id="empty-means-default"),
        pytest.param(
            {"profiles": {"x": {"min": [1], "opt": [2], "max": [3]}}},
            BuildOptions(profiles={"x": ProfileShape((1,), (2,), (3,))}),
            id="profiles-from-json",
        ),
        pytest.param({"workspace_mb": 64, "newer_option": 1}, BuildOptions(workspace_mb=64), id="unknown-ignored"),
    ],
)
def test_build_options_read_as_before(given: dict[str, Any], expected: BuildOptions) -> None:
    assert BuildOptions(**given) == expected


def test_parity_figures_keep_their_shape_and_an_infinite_error() -> None:
    output = OutputParity("y", math.inf, math.inf, 2.0, -1.0, None)
    report = ParityReport((output,), default_tolerances(Precision.INT8), False, ("bad",))
    assert wire(report) == {
        "passed": False,
        "reasons": ["bad"],
        "tolerances": {"atol": 0.25, "rtol": 0.25, "cosine": 0.98, "top1": 0.9},
        "outputs": [
            {
                "name": "y",
                "max_abs": math.inf,
                "max_rel": math.inf,
                "reference_scale": 2.0,
                "cosine": -1.0,
                "top1_agreement": None,
            }
        ],
    }
    sent = BuildReport(parity=wire(report)).model_dump_json()
    assert '"max_abs":Infinity' in sent  # as json.dumps wrote it: the control plane reads it back as inf
    assert BuildReport.model_validate_json(sent).parity["outputs"][0]["max_abs"] == math.inf


def test_a_task_goes_over_the_wire_and_back_unchanged() -> None:
    task = BuildTask(
        build_id="b1",
        key="k" * 64,
        model="m",
        version=1,
        **wire(PLAN),
        options=BuildOptions(profiles=PROFILES),
        source=FILE,
        samples=FILE,
        tolerances=default_tolerances(Precision.INT8),
        lease_s=30,
    )
    again = BuildTask.model_validate_json(task.model_dump_json())
    assert again == task and again.spec == PLAN and again.calibration is None


@pytest.mark.parametrize(
    ("message", "data"),
    [
        pytest.param(BuilderClaim, {"builder_id": "has space"}, id="claim-label-pattern"),
        pytest.param(BuilderClaim, {"kinds": ["onnx"] * 9}, id="claim-too-many-kinds"),
        pytest.param(BuilderClaim, {"reasons": ["r"] * 17}, id="claim-too-many-reasons"),
        pytest.param(BuilderClaim, {"compute_capability": "sm87"}, id="claim-compute-capability"),
        pytest.param(BuilderClaim, {"hostname": "h" * 256}, id="claim-hostname-length"),
        pytest.param(BuildHeartbeat, {"progress": 1.5}, id="heartbeat-progress"),
        pytest.param(BuildHeartbeat, {"message": "m" * 4001}, id="heartbeat-message-length"),
        pytest.param(BuildHeartbeat, {"unexpected": 1}, id="heartbeat-unknown-field"),
        pytest.param(BuildFailure, {"error": ""}, id="failure-without-reason"),
        pytest.param(BuildFailure, {"error": "e" * 20001}, id="failure-too-long"),
        pytest.param(BuildReport, {"latency": "fast"}, id="report-part-not-an-object"),
        pytest.param(RemoteFile, {"url": "u", "sha256": "nope", "size": 1}, id="file-digest"),
    ],
)
def test_hostile_messages_are_refused(message: Any, data: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        message(**data)


@pytest.mark.parametrize(
    ("claim", "kinds", "label"),
    [
        pytest.param(
            {"kinds": ["onnx", "tensorrt-plan"]},
            (ArtifactKind.ONNX, ArtifactKind.TENSORRT_PLAN),
            "tok",
            id="token-name",
        ),
        pytest.param({"builder_id": "b-1", "newer": True}, (), "b-1", id="own-label-unknown-ignored"),
    ],
)
def test_a_claim_becomes_the_builder_the_control_plane_records(
    claim: dict[str, Any], kinds: tuple[ArtifactKind, ...], label: str
) -> None:
    info = BuilderClaim.model_validate(claim).info(default_label="tok")
    assert (info.builder_id, info.kinds) == (label, kinds)
    assert BuilderClaim.of(info).info("x") == info == BuilderInfo(**info.as_dict())


def test_a_claim_of_an_unknown_kind_is_refused_when_read() -> None:
    with pytest.raises(ValidationError, match=r"kinds\.0"):
        BuilderClaim(kinds=["onnx-fp64"]).info("b")
