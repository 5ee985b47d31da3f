"""Asking a device for answers over the Open Inference Protocol (KServe v2) and judging them.

Encoding, decoding and comparison are pure functions; `check_device` does the HTTP calls. It must never judge a
device by anything but its answers to the version's reference samples.
"""

from __future__ import annotations

import io
import statistics
import time
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np

ATOL = 1e-4
RTOL = 1e-3
LATENCY_REQUESTS = 50

_DATATYPES = {
    "float32": "FP32",
    "float64": "FP64",
    "float16": "FP16",
    "int64": "INT64",
    "int32": "INT32",
    "int8": "INT8",
    "uint8": "UINT8",
    "bool": "BOOL",
}
_DTYPES = {v: k for k, v in _DATATYPES.items()}


@dataclass(frozen=True)
class Samples:
    inputs: dict[str, np.ndarray]
    outputs: dict[str, np.ndarray]


@dataclass(frozen=True)
class DeviceCheck:
    answers_ok: bool
    p50_ms: float
    problem: str | None = None


def load_samples(npz: bytes) -> Samples:
    """Split a samples.npz into `input:NAME` and `output:NAME` arrays."""
    with np.load(io.BytesIO(npz), allow_pickle=False) as data:
        inputs = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("input:")}
        outputs = {k.split(":", 1)[1]: data[k] for k in data.files if k.startswith("output:")}
    return Samples(inputs, outputs)


def infer_request(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": _DATATYPES.get(str(array.dtype), "FP32"),
                "data": array.ravel().tolist(),
            }
            for name, array in inputs.items()
        ]
    }


def decode_outputs(answer: dict[str, Any]) -> dict[str, np.ndarray]:
    out = {}
    for item in answer.get("outputs", []):
        dtype = _DTYPES.get(str(item.get("datatype")), "float32")
        out[str(item["name"])] = np.asarray(item["data"], dtype=dtype).reshape(item["shape"])
    return out


def compare(reference: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> str | None:
    """None when every reference output is matched within tolerance, else what differs."""
    for name, expected in reference.items():
        if name not in got:
            return f"output {name!r} missing (got {sorted(got)})"
        actual = got[name]
        if actual.shape != expected.shape:
            return f"output {name!r} has shape {list(actual.shape)}, expected {list(expected.shape)}"
        if not np.allclose(actual, expected, atol=ATOL, rtol=RTOL):
            worst = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
            return f"output {name!r} differs from the reference (max abs diff {worst:.3g})"
    return None


def check_device(serving_url: str, model: str, samples: Samples, requests: int = LATENCY_REQUESTS) -> DeviceCheck:
    """Send the reference inputs once to judge the answer, then `requests` times to measure latency."""
    url = f"{serving_url.rstrip('/')}/v2/models/{model}/infer"
    body = infer_request(samples.inputs)
    with httpx.Client(timeout=10.0) as http:
        first = http.post(url, json=body)
        if first.is_error:
            return DeviceCheck(False, float("nan"), f"{url} answered {first.status_code}: {first.text[:200]}")
        problem = compare(samples.outputs, decode_outputs(first.json()))
        timings = []
        for _ in range(requests):
            start = time.perf_counter()
            http.post(url, json=body).raise_for_status()
            timings.append((time.perf_counter() - start) * 1000.0)
    return DeviceCheck(problem is None, statistics.median(timings), problem)
