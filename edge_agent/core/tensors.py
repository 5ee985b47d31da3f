"""Tensor descriptions shared by the runtime adapter, the self-test and the serving API (KServe v2 names).

Pure: no runtime library here, only numpy and the v2 datatype names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# KServe v2 datatype name -> numpy dtype.
V2_DTYPES: Mapping[str, np.dtype[np.generic]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}


def v2_datatype(dtype: np.dtype[np.generic]) -> str:
    for name, candidate in V2_DTYPES.items():
        if candidate == dtype:
            return name
    raise ValueError(f"no KServe v2 datatype for numpy dtype {dtype}")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output: name, v2 datatype, shape with -1 for a dynamic dimension."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    def accepts_shape(self, shape: Sequence[int]) -> bool:
        if len(shape) != len(self.shape):
            return False
        return all(want < 0 or want == got for want, got in zip(self.shape, shape, strict=True))

    def example(self) -> np.ndarray:
        """A zero tensor of this spec, dynamic dimensions set to 1 (for warm-up)."""
        shape = tuple(dim if dim > 0 else 1 for dim in self.shape)
        return np.zeros(shape, dtype=V2_DTYPES[self.datatype])
