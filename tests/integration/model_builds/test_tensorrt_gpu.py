"""A real TensorRT plan, built and proved on a GPU host. Skipped, with the reason, where TensorRT or a GPU is missing.

The plan is built with the TensorRT Python API, wrapped in an EPContext model and run through onnxruntime's
TensorRT EP for its parity report; nothing here is faked.
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from edge_agent.protocol.vocabulary import ArtifactKind, Precision
from model_builds.capabilities import tensorrt_importable
from model_builds.execute import execute, this_host
from model_builds.tensorrt_plan import plan_bytes
from tests.unit.model_builds.models import convnet, write
from tests.unit.model_builds.test_builds import task_for

pytestmark = [pytest.mark.integration, pytest.mark.tensorrt, pytest.mark.gpu]


@pytest.fixture(scope="module")
def gpu_host():  # type: ignore[no-untyped-def]
    if not tensorrt_importable():
        pytest.skip("tensorrt is not installed (NVIDIA's wheels; only on GPU build hosts)")
    pytest.importorskip("tensorrt", reason="tensorrt is installed but does not import on this host")
    host = this_host()
    if not host.gpu_present or host.compute_capability is None or host.tensorrt_version is None:
        pytest.skip("no NVIDIA GPU detected (nvidia-smi / nv_tegra_release), so no plan can be built here")
    return host


@pytest.mark.parametrize("precision", [Precision.FP32, Precision.FP16, Precision.INT8])
def test_a_plan_is_built_wrapped_and_proved(gpu_host, tmp_path: Path, precision: Precision) -> None:  # type: ignore[no-untyped-def]
    source, samples = write(convnet(), tmp_path)
    task = task_for(
        ArtifactKind.TENSORRT_PLAN, precision, target=gpu_host.gpu_class, cc=gpu_host.compute_capability,
        trt=gpu_host.tensorrt_version,
    )  # fmt: skip
    product = execute(task, source, samples, None, tmp_path, lambda m, f: None, latency_runs=10, host=gpu_host)
    assert len(plan_bytes(onnx.load(str(product.artifact)))) > 1000
    assert product.latency.provider == "TensorrtExecutionProvider"
    assert {b.batch for b in product.latency.batches} >= {1, 16, 32}  # 1, the samples' batch, the profile's max
    assert product.parity.passed, product.parity.reasons
    assert product.toolchain["tensorrt"] == gpu_host.tensorrt_version
