"""The inference body codec (JSON and the binary tensor data extension), pure: hostile bodies get a 400 with the
reason, and never make it allocate past the limits."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

from edge_agent.serving.codec import (
    DecodedRequest,
    OutputTensor,
    decode_request,
    encode_response,
    parse_header_length,
)
from edge_agent.serving.errors import ProtocolError
from edge_agent.serving.limits import ServingLimits

LIMITS = ServingLimits(max_elements=1000, max_json_bytes=64 * 1024, max_body_bytes=1024 * 1024)
X = np.arange(12, dtype=np.float32).reshape(3, 4)


def binary_body(header: dict, *blobs: bytes, header_length: int | None = None, extra: bytes = b"") -> tuple[bytes, int]:
    head = json.dumps(header).encode()
    return head + b"".join(blobs) + extra, len(head) if header_length is None else header_length


def binary_input(name="X", shape=(3, 4), datatype="FP32", size=48, **more) -> dict:
    return {"name": name, "shape": list(shape), "datatype": datatype, "parameters": {"binary_data_size": size}, **more}


def decode(body: bytes | dict, header_length: int | None = None) -> DecodedRequest:
    raw = json.dumps(body).encode() if isinstance(body, dict) else body
    return decode_request(raw, header_length, LIMITS)


def test_binary_inputs_are_read_in_order_as_little_endian_tensors():
    y = np.array([[True, False, True]])
    body, length = binary_body(
        {
            "id": "r1",
            "inputs": [binary_input(), binary_input("B", (1, 3), "BOOL", 3)],
            "outputs": [{"name": "Y", "parameters": {"binary_data": True}}, {"name": "Z"}],
        },
        X.astype("<f4").tobytes(),
        y.astype(np.uint8).tobytes(),
    )
    request = decode(body, length)
    assert request.id == "r1"
    np.testing.assert_array_equal(request.inputs["X"], X)
    np.testing.assert_array_equal(request.inputs["B"], y)
    assert [(o.name, o.binary) for o in request.outputs] == [("Y", True), ("Z", False)]


@pytest.mark.parametrize(
    ("data", "datatype", "expected"),
    [
        pytest.param(X.ravel().tolist(), "FP32", X, id="flat"),
        pytest.param(X.tolist(), "FP32", X, id="nested"),
        pytest.param(list(range(12)), "INT64", np.arange(12).reshape(3, 4), id="int64"),
        pytest.param(list(range(12)), "FP16", np.arange(12, dtype=np.float16).reshape(3, 4), id="ints-as-fp16"),
    ],
)
def test_json_inputs_flat_or_nested(data, datatype, expected):
    request = decode({"inputs": [{"name": "X", "shape": [3, 4], "datatype": datatype, "data": data}]})
    np.testing.assert_array_equal(request.inputs["X"], expected)
    assert request.inputs["X"].dtype == expected.dtype


def json_input(data, datatype="FP32", shape=(3, 4)):
    return {"inputs": [{"name": "X", "shape": list(shape), "datatype": datatype, "data": data}]}


def raw_json_body(text: str) -> bytes:
    return b'{"inputs":[{"name":"X","shape":[1],"datatype":"FP32","data":[' + text.encode() + b"]}]}"


@pytest.mark.parametrize(
    ("body", "header_length", "message"),
    [
        pytest.param(raw_json_body("NaN"), None, "NaN is not a number this server takes", id="json-nan"),
        pytest.param(raw_json_body("Infinity"), None, "Infinity is not a number", id="json-infinity"),
        pytest.param(raw_json_body("-Infinity"), None, "-Infinity is not a number", id="json-minus-infinity"),
        pytest.param(raw_json_body("1e39"), None, "not a finite FP32 number", id="fp32-overflow"),
        pytest.param(raw_json_body("1e999"), None, "not a finite FP32 number", id="float-overflow"),
        pytest.param(raw_json_body('"1.5"'), None, "not a list of FP32", id="number-as-string"),
        pytest.param(raw_json_body("null"), None, "not a list of FP32", id="null"),
        pytest.param(b"{not json", None, "the body is not JSON", id="not-json"),
        pytest.param(b"\xff\xfe\x00", None, "the body is not JSON", id="not-utf8"),
        pytest.param(b"[" * 50_000, None, "the body is not JSON", id="deep-nesting"),
        pytest.param(json.dumps({"inputs": []}).encode(), None, "inputs", id="no-inputs"),
        pytest.param(json.dumps({"inputs": [{"name": "X"}]}).encode(), None, "shape", id="missing-fields"),
    ],
)
def test_malformed_bodies_are_refused_with_the_reason(body, header_length, message):
    with pytest.raises(ProtocolError) as refused:
        decode(body, header_length)
    assert refused.value.status == 400 and message in refused.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(json_input([1.5] * 12, "INT64"), "not a list of INT64", id="float-into-int"),
        pytest.param(json_input([300] * 12, "UINT8"), "out of the range of UINT8", id="int-out-of-range"),
        pytest.param(json_input([2**70] * 12, "INT64"), "not a list of INT64", id="past-64-bits"),
        pytest.param(json_input([1] * 12, "BOOL"), "not a list of BOOL", id="int-into-bool"),
        pytest.param(json_input([[1, 2], [3]]), "not a rectangular list", id="ragged"),
        pytest.param(json_input([1.0] * 11), "needs 12 values, got 11", id="too-few"),
        pytest.param(json_input(None), "has no data", id="no-data"),
        pytest.param(json_input({"a": 1}), "has no data", id="data-not-a-list"),
        pytest.param(json_input(["x"], "BYTES", (1,)), "BYTES; this server's models take numeric", id="bytes"),
        pytest.param(json_input([1], "FP8", (1,)), "datatype 'FP8'", id="unknown-datatype"),
        pytest.param(json_input([1.0] * 12, shape=(-3, -4)), "cannot be negative", id="negative-dims"),
        pytest.param(json_input([1.0], shape=(10**9, 10**9)), "over the limit of 1000", id="huge-shape"),
        pytest.param(json_input([1.0], shape=(2**62,) * 16), "over the limit of 1000", id="shape-overflow"),
        pytest.param(
            {"inputs": [json_input([1.0] * 12)["inputs"][0]] * 2}, "input 'X' is given twice", id="duplicate-input"
        ),
        pytest.param(
            {**json_input([1.0] * 12), "parameters": {"binary_data_output": "yes"}},
            "binary_data_output must be true or false",
            id="flag-not-bool",
        ),
    ],
)
def test_json_tensors_the_codec_refuses(body, message):
    with pytest.raises(ProtocolError) as refused:
        decode(body)
    assert refused.value.status == 400 and message in refused.value.message


HUGE = 10**12


@pytest.mark.parametrize(
    ("header", "blobs", "header_length", "message"),
    [
        pytest.param({"inputs": [binary_input()]}, [X.tobytes()], 10**9, "past the end of the", id="header-past-body"),
        pytest.param({"inputs": [binary_input()]}, [X.tobytes()], 5, "the body is not JSON", id="header-cut-short"),
        pytest.param({"inputs": [binary_input(size=-48)]}, [X.tobytes()], None, "must be a byte count", id="negative"),
        pytest.param({"inputs": [binary_input(size=True)]}, [X.tobytes()], None, "must be a byte count", id="bool"),
        pytest.param({"inputs": [binary_input(size=HUGE)]}, [X.tobytes()], None, "goes past the end", id="huge-size"),
        pytest.param({"inputs": [binary_input(size=40)]}, [X.tobytes()], None, "needs 48", id="size-not-shape"),
        pytest.param({"inputs": [binary_input()]}, [X.tobytes(), b"junk"], None, "4 bytes after", id="trailing-bytes"),
        pytest.param(
            {"inputs": [binary_input(shape=(HUGE, HUGE), size=48)]}, [X.tobytes()], None, "over the limit", id="shape"
        ),
        pytest.param(
            {"inputs": [binary_input(data=[1.0] * 12)]}, [X.tobytes()], None, "both data and", id="data-and-binary"
        ),
        pytest.param(
            {"inputs": [binary_input()]},
            [np.full((3, 4), np.nan, dtype=np.float32).tobytes()],
            None,
            "not a finite FP32",
            id="binary-nan",
        ),
        pytest.param(
            {"inputs": [binary_input(datatype="BYTES")]}, [X.tobytes()], None, "BYTES; this server", id="bytes"
        ),
    ],
)
def test_binary_bodies_the_codec_refuses(header, blobs, header_length, message):
    body, length = binary_body(header, *blobs, header_length=header_length)
    with pytest.raises(ProtocolError) as refused:
        decode(body, length)
    assert refused.value.status == 400 and message in refused.value.message


@pytest.mark.parametrize("outputs", [pytest.param(None, id="absent"), pytest.param([], id="empty")])
def test_no_named_outputs_means_every_output(outputs):
    body = {**json_input([1.0] * 12), "parameters": {"binary_data_output": True}}
    if outputs is not None:
        body["outputs"] = outputs
    request = decode(body)
    assert request.outputs is None and request.binary_output is True


def test_binary_size_without_the_header_length_is_refused():
    with pytest.raises(ProtocolError, match="has no Inference-Header-Content-Length"):
        decode({"inputs": [binary_input()]}, None)


def test_a_json_header_over_the_limit_is_413():
    body, length = binary_body({"inputs": [binary_input()], "id": "x" * 200}, X.tobytes())
    with pytest.raises(ProtocolError) as refused:
        decode_request(body, length, ServingLimits(max_json_bytes=100))
    assert refused.value.status == 413


def test_a_declared_shape_of_a_terabyte_allocates_nothing():
    """What the attacker does not get: memory. The shape is judged before any tensor is made."""
    body, length = binary_body({"inputs": [binary_input(shape=(HUGE,), size=4 * HUGE)]}, X.tobytes())
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError, match="over the limit"):
            decode(body, length)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param("42", 42, id="number"),
        pytest.param(" 7 ", 7, id="spaces"),
    ],
)
def test_header_length_parses(raw, expected):
    assert parse_header_length(raw) == expected


@pytest.mark.parametrize(
    "raw", ["-1", "1e3", "0x10", "", "9" * 40, "\u00b2", "\u0661\u0662"]
)  # superscript 2, Arabic 12
def test_header_length_that_is_not_a_byte_count_is_400(raw):
    with pytest.raises(ProtocolError, match="must be a byte count") as refused:
        parse_header_length(raw)
    assert refused.value.status == 400


def test_encoded_response_puts_binary_outputs_after_the_json_header():
    y = np.array([[1.5, -2.0]], dtype=np.float32)
    z = np.array([3, 4], dtype=np.int64)
    encoded = encode_response({"model_name": "m"}, [OutputTensor("Y", y, True), OutputTensor("Z", z, False)])
    header = json.loads(encoded.body[: encoded.header_length])
    assert header == {
        "model_name": "m",
        "outputs": [
            {"name": "Y", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}},
            {"name": "Z", "datatype": "INT64", "shape": [2], "data": [3, 4]},
        ],
    }
    np.testing.assert_array_equal(np.frombuffer(encoded.body[encoded.header_length :], "<f4"), y.ravel())


def test_a_json_response_has_no_header_length():
    encoded = encode_response({"model_name": "m"}, [OutputTensor("Y", np.zeros(2, np.float32), False)])
    assert encoded.header_length is None and json.loads(encoded.body)["outputs"][0]["data"] == [0.0, 0.0]


def test_a_non_finite_output_is_refused_in_json_and_carried_in_binary():
    y = np.array([np.inf], dtype=np.float32)
    with pytest.raises(ProtocolError, match=r"ask for it with parameters\.binary_data") as refused:
        encode_response({}, [OutputTensor("Y", y, False)])
    assert refused.value.status == 500
    encoded = encode_response({}, [OutputTensor("Y", y, True)])
    assert np.isinf(np.frombuffer(encoded.body[encoded.header_length :], "<f4")).all()
