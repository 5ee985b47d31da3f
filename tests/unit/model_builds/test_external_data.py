"""External data (torch.onnx.export's default `model.onnx` + `model.onnx.data`): which names are safe, and folding
the files into one self-contained model. The attacks: a location that leaves the upload, one that names a file not
uploaded, data shorter than its tensor; each refused with a reason, and nothing outside the upload read."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper

from model_builds.external_data import inline_external_data, location_refusal, referenced_locations
from model_builds.onnx_model import InvalidModel, inspect_model
from tests.unit.control_plane.onnx_models import W, linear_model


def exported(folder: Path, location: str = "model.onnx.data") -> Path:
    """The linear model saved as torch does: its initializers in one external data file next to it."""
    model = onnx.load_from_string(linear_model())
    path = folder / "model.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, location=location, size_threshold=0)
    return path


def pointing_at(folder: Path, location: str, length: int | None = None) -> Path:
    """A model whose weight `W` claims to live at `location` (whatever that names), written by hand."""
    model = onnx.load_from_string(linear_model())
    weight = model.graph.initializer[0]
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", str(length or W.nbytes))):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    path = folder / "model.onnx"
    path.write_bytes(model.SerializeToString())
    return path


@pytest.mark.parametrize(
    ("location", "refused"),
    [
        pytest.param("model.onnx.data", None, id="next-to-the-model"),
        pytest.param("weights/w.bin", None, id="in-a-subfolder"),
        pytest.param("../../etc/passwd", "'..'", id="parent-traversal"),
        pytest.param("weights/../../x", "'..'", id="traversal-inside"),
        pytest.param("/etc/passwd", "absolute path", id="absolute"),
        pytest.param("C:\\Windows\\x", "relative path written with '/'", id="windows-path"),
        pytest.param("", "1-255 characters", id="empty"),
        pytest.param("a" * 300, "1-255 characters", id="too-long"),
        pytest.param("a//b", "empty parts", id="empty-part"),
    ],
)
def test_a_location_must_stay_next_to_the_model(location: str, refused: str | None) -> None:
    refusal = location_refusal(location)
    assert refusal is None if refused is None else refused in (refusal or ""), refusal


def test_a_torch_style_export_is_folded_into_one_model_that_answers_the_same(tmp_path: Path) -> None:
    model = exported(tmp_path)
    assert referenced_locations(model) == ["model.onnx.data"]
    folded = tmp_path / "folded.onnx"
    inline_external_data(model, {"model.onnx.data": tmp_path / "model.onnx.data"}, folded)
    loaded = onnx.load_model(str(folded), load_external_data=False)
    assert all(t.data_location == TensorProto.DEFAULT for t in loaded.graph.initializer)
    np.testing.assert_array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), W)
    assert [t.name for t in inspect_model(folded).inputs] == ["X"]


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


ATTACKS = [
    pytest.param("../../etc/passwd", {"passwd": W.tobytes()}, "'..'", id="parent-traversal"),
    pytest.param("/etc/passwd", {"passwd": W.tobytes()}, "absolute path", id="absolute"),
    pytest.param("weights.bin", {"other.bin": W.tobytes()}, "which was not uploaded", id="not-uploaded"),
    pytest.param("weights.bin", {"weights.bin": W.tobytes()[:-4]}, "but the file has 44 bytes", id="data-too-short"),
    pytest.param(
        "weights.bin", {"weights.bin": W.tobytes(), "extra.bin": b"x"}, "not named by the model", id="stray-file"
    ),
]


@pytest.mark.parametrize(("location", "uploaded", "message"), ATTACKS)
def test_a_hostile_location_is_refused_and_nothing_outside_the_upload_is_read(
    tmp_path: Path, location: str, uploaded: dict[str, bytes], message: str
) -> None:
    upload = tmp_path / "upload"
    upload.mkdir()
    files = {name: write(upload / f"file-{i}", data) for i, (name, data) in enumerate(uploaded.items())}
    model = pointing_at(tmp_path, location)
    folded = tmp_path / "folded.onnx"
    with pytest.raises(InvalidModel, match=message) as refused:
        inline_external_data(model, files, folded)
    assert not folded.exists()
    assert str(tmp_path) not in str(refused.value)  # no host path in what the uploader is told


def test_a_length_that_does_not_fit_the_shape_is_refused(tmp_path: Path) -> None:
    data = write(tmp_path / "w", W.tobytes() + b"\0" * 8)
    model = pointing_at(tmp_path, "weights.bin", length=W.nbytes + 8)
    with pytest.raises(InvalidModel, match=r"has 56 bytes; its shape \[4, 3\] needs 48"):
        inline_external_data(model, {"weights.bin": data}, tmp_path / "folded.onnx")


def test_the_cli_side_refuses_an_unsafe_location_before_anything_is_sent(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match=r"external data location '\.\./secret' must not contain '\.\.'"):
        referenced_locations(pointing_at(tmp_path, "../secret"))
