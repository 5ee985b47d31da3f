"""Which hardware a plan's key accepts: the rule both the control plane and the agent apply."""

from __future__ import annotations

import pytest

from edge_agent.protocol import HardwareFacts, HardwareKey


def facts(gpu_class: str = "dgpu-ampere", cc: str | None = "8.6", trt: str | None = "10.3.0") -> HardwareFacts:
    return HardwareFacts(gpu_class=gpu_class, arch="x86_64", compute_capability=cc, tensorrt_version=trt)


KEY = HardwareKey(gpu_class="dgpu-ampere", compute_capability="8.6", tensorrt_version="10.3.0")


@pytest.mark.parametrize(
    ("key", "device", "refused_because"),
    [
        pytest.param(KEY, facts(), None, id="exact-match"),
        pytest.param(KEY, facts(gpu_class="dgpu-ada", cc="8.9"), "GPU class dgpu-ampere", id="other-class"),
        pytest.param(KEY, facts(cc="8.0"), "compute capability 8.6, this GPU is 8.0", id="other-sm"),
        pytest.param(KEY, facts(cc=None), "no GPU detected", id="no-gpu"),
        pytest.param(KEY, facts(trt="10.4.0"), "TensorRT 10.3.0, this device has 10.4.0", id="other-trt"),
        pytest.param(KEY, facts(trt=None), "this device has no TensorRT", id="no-trt"),
        pytest.param(
            KEY.model_copy(update={"hardware_compatibility_level": "ampere+"}),
            facts(cc="8.0"),
            None,
            id="ampere-plus-80",
        ),
        pytest.param(
            HardwareKey(gpu_class="dgpu-turing", compute_capability="8.6", hardware_compatibility_level="ampere+"),
            facts(gpu_class="dgpu-turing", cc="7.5"),
            "compute capability 8.6, this GPU is 7.5",
            id="ampere-plus-refuses-turing",
        ),
        pytest.param(HardwareKey(gpu_class="cpu-x86_64"), facts("cpu-x86_64", None, None), None, id="cpu-key"),
    ],
)
def test_refusal(key: HardwareKey, device: HardwareFacts, refused_because: str | None) -> None:
    reason = key.refusal(device)
    if refused_because is None:
        assert reason is None
    else:
        assert reason is not None and refused_because in reason
