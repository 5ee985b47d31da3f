"""The demo model's training entrypoint honours the contract of docs/api.md (one run: it is torch, keep it short)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from control_plane.cli.demo.command import DEFAULT_CODE_DIR
from tests.support import python_env

pytestmark = pytest.mark.integration

TRAIN = DEFAULT_CODE_DIR / "train.py"


def test_train_writes_one_onnx_file_with_dynamic_batch_samples_and_metrics(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = subprocess.run(
        [sys.executable, str(TRAIN), "--output-dir", str(out), "--params-json", '{"epochs": 2, "samples": 600}'],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 2/2" in result.stdout
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "model.onnx", "samples.npz"]

    model = onnx.load(str(out / "model.onnx"))
    onnx.checker.check_model(model)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    for batch in (1, 5):
        (logits,) = session.run(None, {"input": np.zeros((batch, 8), dtype=np.float32)})
        assert logits.shape == (batch, 3)

    with np.load(out / "samples.npz") as samples:
        assert samples.files == ["input:input"]
        assert samples["input:input"].shape == (8, 8) and samples["input:input"].dtype == np.float32

    metrics = json.loads((out / "metrics.json").read_text())
    assert 0.5 < metrics["accuracy"] <= 1.0
    assert set(metrics["tool_versions"]) >= {"torch", "onnx", "onnxscript"}
    assert len(metrics["data_digest"]) == 64
