"""Hostile inputs, made cheaply: a deflate zip bomb written by hand (no gigabytes compressed to make it) and
ONNX models that run forever or ask for unbounded memory. Shared by the unit and integration tests."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

_BLOCK = 1 << 20


def npy_header(shape: tuple[int, ...], descr: str = "<f4") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def zip_bomb(inflated_bytes: int, name: str = "input:X.npy", declared_bytes: int | None = None) -> bytes:
    """An .npz whose one member (a float32 array header, then zeros) inflates to 128 + `inflated_bytes`, about a
    thousandth of that compressed. `declared_bytes` makes its zip records lie about the uncompressed size.

    Deflate with a full flush resets the compressor, so every 1 MiB block of zeros compresses to the same bytes:
    the bomb is assembled from one compressed block, not made by compressing gigabytes."""
    zeros = bytes(_BLOCK)
    blocks = inflated_bytes // _BLOCK
    header = npy_header((blocks * _BLOCK // 4,))
    deflate = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = deflate.compress(header) + deflate.flush(zlib.Z_FULL_FLUSH)
    block = deflate.compress(zeros) + deflate.flush(zlib.Z_FULL_FLUSH)
    data = head + block * blocks + deflate.flush(zlib.Z_FINISH)
    crc = zlib.crc32(header)
    for _ in range(blocks):
        crc = zlib.crc32(zeros, crc)
    size = len(header) + blocks * _BLOCK if declared_bytes is None else declared_bytes
    return _zip_one(name.encode(), data, crc, size)


def _zip_one(name: bytes, data: bytes, crc: int, size: int) -> bytes:
    fields = (20, 0, zlib.DEFLATED, 0, 0x21, crc & 0xFFFFFFFF, len(data), size, len(name))
    local = struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", *fields, 0) + name
    central = struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, *fields, 0, 0, 0, 0, 0, 0) + name
    end = struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, 1, 1, len(central), len(local) + len(data), 0)
    return local + data + central + end


def many_members(count: int) -> bytes:
    """An .npz of `count` tiny arrays (a central directory that costs an object per entry to parse)."""
    out = io.BytesIO()
    np.savez(out, **{f"a{i}": np.zeros(1, np.float32) for i in range(count)})  # type: ignore[arg-type]
    return out.getvalue()


def endless_loop_model(trip_count: int = 2**62) -> bytes:
    """Y = X + trip_count: an ONNX `Loop` that adds 1 per iteration, 2^62 times. A few hundred bytes; it never
    finishes on any hardware."""
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"]), helper.make_node("Add", ["x_in", "one"], ["x_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_in", TensorProto.FLOAT, ["N", 4]),
        ],
        [
            helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x_out", TensorProto.FLOAT, ["N", 4]),
        ],
        [one],
    )
    graph = helper.make_graph(
        [helper.make_node("Loop", ["trip", "cond", "X"], ["Y"], body=body)],
        "endless",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
        [
            helper.make_tensor("trip", TensorProto.INT64, [], [trip_count]),
            helper.make_tensor("cond", TensorProto.BOOL, [], [True]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def memory_hog_model(elements: int = 2**36) -> bytes:
    """Y = X + sum(ConstantOfShape([elements])): a 256 GiB float32 tensor from a few bytes of graph."""
    value = helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["big"], value=value),
            helper.make_node("ReduceSum", ["big"], ["total"], keepdims=0),
            helper.make_node("Add", ["X", "total"], ["Y"]),
        ],
        "hog",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["N", 4])],
        [helper.make_tensor("shape", TensorProto.INT64, [1], [elements])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return bytes(model.SerializeToString())


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
