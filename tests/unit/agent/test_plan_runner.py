"""Loading TensorRT plans (EPContext models) through the onnxruntime adapter.

Here (no GPU, CPU onnxruntime) a plan must be refused with a clear reason, never run on the CPU. The test that
loads a real plan needs the `tensorrt` package, onnxruntime's TensorRT EP and an NVIDIA GPU: it is marked
`tensorrt` and skipped, with the reason, wherever one of them is missing.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import onnx
import pytest

from edge_agent.adapters.hardware import detect_hardware
from edge_agent.adapters.onnx_runner import OnnxRunnerFactory, available_providers, runtime_version
from edge_agent.core.errors import RunnerError
from edge_agent.protocol import HardwareFacts, RuntimeOptions
from tests.unit.agent.builders import SAMPLE, expected_output, weights, write_model

TRT_OPTIONS = {
    "TensorrtExecutionProvider": {
        "trt_engine_cache_enable": "true",
        "trt_engine_cache_path": "{data_dir}/trt-cache/{gpu_class}/sm{compute_capability}-trt{tensorrt_version}",
    }
}


def epcontext_wrapper(path: Path) -> Path:
    """A plan wrapper as model_builds makes it, around bytes that are not an engine."""
    from model_builds.tensorrt_plan import wrap_plan

    source = onnx.load(str(write_model(path.with_name("source.onnx"), *weights(1))))
    path.write_bytes(wrap_plan(b"not an engine", source, "8.6", "10.3.0").SerializeToString())
    return path


def test_a_plan_is_refused_where_onnxruntime_has_no_tensorrt_ep(tmp_path):
    if "TensorrtExecutionProvider" in available_providers():
        pytest.skip("this onnxruntime has the TensorRT EP; the refusal is for builds without it")
    factory = OnnxRunnerFactory(gpu_present=True, data_dir=tmp_path, facts=HardwareFacts(gpu_class="c", arch="x"))

    with pytest.raises(RunnerError, match="runs only on TensorrtExecutionProvider, which this onnxruntime"):
        factory.load(
            epcontext_wrapper(tmp_path / "plan.onnx"), RuntimeOptions(provider_options=TRT_OPTIONS), "tensorrt-plan"
        )


def test_options_of_providers_not_in_use_are_ignored_and_data_dir_is_required_for_the_rest(tmp_path):
    model = write_model(tmp_path / "m.onnx", *weights(1))
    with_trt_options = RuntimeOptions(provider_options=TRT_OPTIONS)

    runner = OnnxRunnerFactory(gpu_present=False).load(model, with_trt_options)  # CPU only: TRT options unused
    np.testing.assert_allclose(runner.run({"X": SAMPLE})["Y"], expected_output(1), rtol=1e-5)
    assert not (tmp_path / "trt-cache").exists()

    cpu_templated = RuntimeOptions(provider_options={"CPUExecutionProvider": {"x": "{data_dir}/y"}})
    with pytest.raises(RunnerError, match="no data directory"):
        OnnxRunnerFactory(gpu_present=False).load(model, cpu_templated)


def _tensorrt_missing() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return "the tensorrt Python package is not installed (it comes from NVIDIA's index, on GPU hosts)"
    if "TensorrtExecutionProvider" not in available_providers():
        return "this onnxruntime has no TensorrtExecutionProvider (install onnxruntime-gpu)"
    if not detect_hardware(available_providers(), runtime_version()).gpu_present:
        return "no NVIDIA GPU detected"
    return None


@pytest.mark.tensorrt
def test_a_real_plan_loads_on_the_tensorrt_ep_only_and_answers(tmp_path):
    missing = _tensorrt_missing()
    if missing:
        pytest.skip(missing)
    import onnxruntime as ort  # the test makes its plan with onnxruntime's own EPContext dump

    source = write_model(tmp_path / "lin.onnx", *weights(1))
    context = tmp_path / "lin_ctx.onnx"
    dump = {
        "trt_dump_ep_context_model": "True",
        "trt_ep_context_file_path": str(context),
        "trt_ep_context_embed_mode": "1",
        "trt_profile_min_shapes": "X:1x4",
        "trt_profile_opt_shapes": "X:3x4",
        "trt_profile_max_shapes": "X:8x4",
    }
    ort.InferenceSession(str(source), providers=[("TensorrtExecutionProvider", dump)]).run(None, {"X": SAMPLE})
    assert context.exists(), "onnxruntime did not dump the EPContext model"
    detected = detect_hardware(available_providers(), runtime_version())
    factory = OnnxRunnerFactory(gpu_present=True, data_dir=tmp_path / "data", facts=detected.facts)

    runner = factory.load(context, RuntimeOptions(provider_options=TRT_OPTIONS), "tensorrt-plan")

    assert runner.provider == "TensorrtExecutionProvider"
    np.testing.assert_allclose(runner.run({"X": SAMPLE})["Y"], expected_output(1), rtol=1e-3, atol=1e-4)
    facts = detected.facts
    cache = (
        tmp_path / "data" / "trt-cache" / facts.gpu_class / f"sm{facts.compute_capability}-trt{facts.tensorrt_version}"
    )
    assert cache.is_dir()
