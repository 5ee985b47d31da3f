"""Static int8 quantisation to the QDQ format with onnxruntime.quantization: the `onnx-int8-qdq` kind.

QDQ (QuantizeLinear/DequantizeLinear pairs around float ops) is the one int8 format both the CPU EP and the
TensorRT EP consume, and symmetric int8 scales are what TensorRT's explicit quantisation requires. This module
is the only one that imports `onnxruntime.quantization`; it must never pick calibration data itself (the caller
passes the feeds: the version's samples or an uploaded calibration set).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)

Feeds = dict[str, npt.NDArray[np.generic]]


class QuantizationFailure(RuntimeError):
    """onnxruntime.quantization could not quantise the model; the text says why."""


class FeedsReader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no type hints
    """Hands the calibration feeds to the calibrator one at a time."""

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self._feeds: Iterator[Feeds] = iter(list(feeds))

    def get_next(self) -> Feeds | None:
        return next(self._feeds, None)


def quantize_qdq(source: Path, destination: Path, calibration: Sequence[Feeds], per_channel: bool = True) -> None:
    """Write `source` statically quantised to int8 QDQ, scales from MinMax over `calibration`."""
    if not calibration:
        raise QuantizationFailure("int8 quantisation needs at least one calibration input")
    try:
        quantize_static(
            str(source),
            str(destination),
            FeedsReader(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            # 7-bit weights: on x86-64 without VNNI (AVX2, AVX-512 before Cascade Lake) onnxruntime multiplies int8
            # with VPMADDUBSW, whose 16-bit sums saturate; with full-range weights a plain 4x3 MatMul came out
            # 2.06 off on such a machine (onnxruntime's quantisation guide: "try reduce_range"). Builders and
            # cpu-x86_64 devices may be such machines; TensorRT takes the 7-bit values as any int8.
            reduce_range=True,
            calibrate_method=CalibrationMethod.MinMax,
            # Symmetric scales: TensorRT's explicit quantisation accepts no zero points other than 0.
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        )
    except Exception as exc:  # onnxruntime.quantization raises assorted exception types
        raise QuantizationFailure(f"static quantisation failed: {exc}") from exc
    if not destination.is_file():
        raise QuantizationFailure("onnxruntime.quantization did not write the quantised model")
