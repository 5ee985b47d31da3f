"""Rendering of server answers: tables for people, unchanged JSON for scripts; missing fields never crash."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from typing import Any

import pytest
from rich.console import Console, RenderableType

from control_plane.cli import views
from control_plane.cli.output import Output, OutputFormat

DEVICE = {
    "id": "dev-1",
    "presence": "online",
    "gpu_class": "cpu-x86_64",
    "labels": {"site": "factory-a"},
    "reported": {
        "serving_url": "http://127.0.0.1:9000",
        "models": [{"name": "demo", "version": 2, "provider": "CPUExecutionProvider"}],
    },
}
FELL_BACK = {
    **DEVICE,
    "reported": {
        "models": [
            {
                "name": "demo",
                "version": 2,
                "provider": "CUDAExecutionProvider",
                "artifact_kind": "onnx",
                "fallback_reason": "built for compute capability 8.6, this GPU is 8.7",
            }
        ]
    },
}
ROLLOUT = {
    "id": "r1",
    "model": "demo",
    "version": 2,
    "phase": "in_progress",
    "counts": {"activated": 2, "in_progress": 1, "pending": 0, "failed": 0},
    "devices": [{"device_id": "dev-1", "status": "activated", "target": "cpu-x86_64"}],
}


def _render(renderable: RenderableType) -> str:
    console = Console(file=io.StringIO(), width=200, color_system=None)
    console.print(renderable)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(out, str)
    return out


@pytest.mark.parametrize(
    ("view", "data", "expected"),
    [
        pytest.param(views.devices_view, [DEVICE], ["dev-1", "online", "site=factory-a", "demo v2"], id="devices"),
        pytest.param(views.device_view, DEVICE, ["dev-1", "CPUExecutionProvider"], id="device"),
        pytest.param(
            views.device_view,
            FELL_BACK,
            ["demo v2 onnx (CUDAExecutionProvider)", "demo: built for compute capability 8.6, this GPU is 8.7"],
            id="device-fell-back",
        ),
        pytest.param(views.rollout_view, ROLLOUT, ["activated=2 in_progress=1", "dev-1"], id="rollout"),
        pytest.param(
            views.rollout_view,
            ROLLOUT | {"next_cursor": "dev-1"},
            ["showing 1 of 3 devices", "edgectl rollout show r1 --cursor dev-1"],
            id="rollout-with-more-pages",
        ),
        pytest.param(views.rollouts_view, [ROLLOUT], ["r1", "in_progress"], id="rollouts"),
        pytest.param(views.models_view, [{"name": "demo", "latest_version": 3}], ["demo", "3"], id="models"),
        pytest.param(
            views.training_job_view,
            {"id": "j1", "status": "failed", "logs_tail": "Traceback\nValueError: boom"},
            ["j1", "failed", "ValueError: boom"],
            id="training-job",
        ),
        pytest.param(
            views.version_view,
            {
                "model": "demo",
                "version": 1,
                "inputs": [{"name": "input", "shape": ["batch", 8], "dtype": "float32"}],
                "lineage": {"source": "training", "data_digest": "abc"},
            },
            ["demo v1", "input float32 ['batch', 8]", "data_digest"],
            id="version",
        ),
    ],
)
def test_views_show_what_matters(view: Callable[[Any], RenderableType], data: Any, expected: list[str]) -> None:
    text = _render(view(data))
    for fragment in expected:
        assert fragment in text


@pytest.mark.parametrize(
    "view",
    [
        views.devices_view,
        views.builds_view,
        views.versions_view,
        views.rollouts_view,
        views.training_jobs_view,
        views.targets_view,
        views.events_view,
        views.models_view,
    ],
)
def test_list_views_tolerate_sparse_items(view: Callable[[Any], RenderableType]) -> None:
    assert "-" in _render(view([{}]))


def test_json_output_is_the_data_itself(capsys: pytest.CaptureFixture[str]) -> None:
    Output(format=OutputFormat.JSON).emit([DEVICE], views.devices_view)
    assert json.loads(capsys.readouterr().out) == [DEVICE]


def test_errors_with_brackets_are_printed_verbatim() -> None:
    err = Console(file=io.StringIO(), width=60, color_system=None)
    Output(err=err).error("field [/bad] is a very long message that would otherwise be wrapped by rich at 60")
    text = err.file.getvalue()  # type: ignore[attr-defined]
    assert "field [/bad] is a very long message that would otherwise be wrapped by rich at 60" in text


PARITY = {"passed": True, "outputs": [{"name": "y", "max_abs": 0.002, "cosine": 0.9999, "top1_agreement": 1.0}]}
BUILD = {"target": "jetson-orin", "kind": "tensorrt-plan", "precision": "fp16"}


@pytest.mark.parametrize(
    ("build", "expected"),
    [
        pytest.param({"status": "queued"}, "jetson-orin tensorrt-plan fp16: queued", id="queued"),
        pytest.param(
            {
                "status": "waiting_for_builder",
                "waiting_for": "a builder with TensorRT 10.3.0 on compute capability 8.7",
            },
            "jetson-orin tensorrt-plan fp16: waiting for a builder with TensorRT 10.3.0 on compute capability 8.7",
            id="waiting",
        ),
        pytest.param(
            {"status": "running", "progress": 0.4, "message": "building engine"},
            "jetson-orin tensorrt-plan fp16: running 40% building engine",
            id="running",
        ),
        pytest.param(
            {"status": "succeeded", "parity": PARITY},
            "jetson-orin tensorrt-plan fp16: succeeded (parity max abs 0.002, cosine 0.999900, top-1 1.000)",
            id="succeeded",
        ),
        pytest.param(
            {"status": "rejected", "error": "parity: cosine 0.9 < 0.999"},
            "jetson-orin tensorrt-plan fp16: rejected: parity: cosine 0.9 < 0.999",
            id="rejected",
        ),
        pytest.param({"status": "failed"}, "jetson-orin tensorrt-plan fp16: failed: no reason given", id="failed"),
    ],
)
def test_build_line_says_what_a_build_is_doing(build: dict[str, Any], expected: str) -> None:
    assert views.build_line(BUILD | build) == expected


def test_build_view_shows_reports_and_manifest() -> None:
    latency = {"provider": "CPUExecutionProvider", "batches": [{"batch": 1, "runs": 50, "p50_ms": 0.1, "p99_ms": 0.3}]}
    data = BUILD | {"id": "b1", "status": "succeeded", "parity": PARITY, "latency": latency, "manifest": {"key": "k"}}
    text = _render(views.build_view(data))
    assert all(part in text for part in ("parity (passed", "latency (CPUExecutionProvider)", "manifest (signed)", "k"))
    assert "-" in _render(views.builders_view([{}])) and "-" in _render(views.doctor_view({}))
