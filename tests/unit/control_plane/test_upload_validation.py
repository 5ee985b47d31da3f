"""Upload validation: every defect of a model, its samples or metadata is refused with a clear reason, and
nothing is registered."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from control_plane.adapters.artifacts import ArtifactStore
from control_plane.domain.errors import InvalidInput
from control_plane.domain.registry import ModelVersion, NewVersion
from control_plane.services.registry import RegistryService
from tests.unit.control_plane.onnx_models import W, linear_model, linear_samples, npz_bytes

NOW = datetime(2026, 1, 1, tzinfo=UTC)


class RecordingStore:
    """Stands in for the database: records what would be registered (only add_version is used here)."""

    def __init__(self) -> None:
        self.added: list[NewVersion] = []

    def add_version(self, new: NewVersion) -> ModelVersion:
        self.added.append(new)
        return ModelVersion(**{**new.__dict__, "version": len(self.added)})


@pytest.fixture
def store() -> RecordingStore:
    return RecordingStore()


@pytest.fixture
def registry(tmp_path: Path, store: RecordingStore) -> RegistryService:
    return RegistryService(store, ArtifactStore(tmp_path / "artifacts"), lambda: NOW, max_upload_bytes=10_000)  # type: ignore[arg-type]


def external_data_model() -> bytes:
    model = onnx.load_from_string(linear_model())
    weight = model.graph.initializer[0]
    weight.data_location = TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    entry = weight.external_data.add()
    entry.key, entry.value = "location", "weights.bin"
    return bytes(model.SerializeToString())


def invalid_graph_model() -> bytes:
    x = helper.make_tensor_value_info("X", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["X"], ["Y"])], "g", [x], [y])
    return bytes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString())


X3 = np.zeros((3, 4), dtype=np.float32)


@pytest.mark.parametrize(
    ("name", "model", "samples", "metadata", "message"),
    [
        pytest.param("m", b"", None, None, "model: the uploaded file is empty", id="empty"),
        pytest.param("m", b"\x00garbage\xff" * 10, None, None, "not an ONNX model", id="not-onnx"),
        pytest.param("m", b"x" * 10_001, None, None, "larger than the 10000-byte limit", id="too-large"),
        pytest.param("m", external_data_model(), None, None, "'weights.bin', which was not", id="external-data"),
        pytest.param("m", invalid_graph_model(), None, None, "not a valid ONNX model", id="checker-fails"),
        pytest.param("../etc", linear_model(), None, None, "model name '../etc' must be", id="bad-name"),
        pytest.param("m", linear_model(), None, "{not json", "metadata is not valid", id="metadata-not-json"),
        pytest.param("m", linear_model(), None, '{"owner": "x"}', "metadata is not valid: owner", id="metadata-key"),
        pytest.param("m", linear_model(), b"not a zip", None, "not a readable .npz", id="samples-not-npz"),
        pytest.param(
            "m", linear_model(), npz_bytes(**{"input:Z": X3}), None, "model does not have", id="samples-wrong-name"
        ),
        pytest.param(
            "m", linear_model(), npz_bytes(other=X3), None, "neither 'input:NAME'", id="samples-unknown-array"
        ),
        pytest.param(
            "m", linear_model(), npz_bytes(**{"input:X": X3.astype(np.float64)}), None, "dtype float64",
            id="samples-wrong-dtype",
        ),
        pytest.param(
            "m", linear_model(), npz_bytes(**{"input:X": np.zeros((3, 5), np.float32)}), None, "wants ['N', 4]",
            id="samples-wrong-shape",
        ),
        pytest.param(
            "m", linear_model(), npz_bytes(**{"input:X": np.zeros((4,), np.float32)}), None, "wants rank 2",
            id="samples-wrong-rank",
        ),
        pytest.param(
            "m", linear_model(), npz_bytes(**{"input:X": X3, "output:Y": np.zeros((3, 2), np.float32)}), None,
            "samples output 'Y'", id="reference-wrong-shape",
        ),
    ],
)  # fmt: skip
def test_bad_upload_is_refused_and_nothing_registered(
    registry: RegistryService,
    store: RecordingStore,
    tmp_path: Path,
    name: str,
    model: bytes,
    samples: bytes | None,
    metadata: str | None,
    message: str,
) -> None:
    with pytest.raises(InvalidInput) as info:
        registry.register_upload(name, io.BytesIO(model), io.BytesIO(samples) if samples else None, metadata)
    assert message in str(info.value)
    assert store.added == []
    leftovers = [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]
    assert leftovers == []


def test_plain_input_names_are_accepted(registry: RegistryService, store: RecordingStore) -> None:
    version = registry.register_upload("m", io.BytesIO(linear_model()), io.BytesIO(npz_bytes(X=X3)), None)
    assert (version.sample_count, version.samples_synthesised, version.reference_outputs_computed) == (3, False, True)


def test_given_reference_outputs_are_kept(registry: RegistryService) -> None:
    version = registry.register_upload("m", io.BytesIO(linear_model()), io.BytesIO(linear_samples()), None)
    assert version.reference_outputs_computed is False


def test_synthesised_samples_are_deterministic(registry: RegistryService, tmp_path: Path) -> None:
    first = registry.register_upload("m", io.BytesIO(linear_model()), None, None)
    second = registry.register_upload("m", io.BytesIO(linear_model()), None, None)
    assert first.samples_synthesised and first.reference_outputs_computed
    assert first.samples_sha256 == second.samples_sha256
    assert first.sample_count == 2
    sha = first.samples_sha256
    arrays = np.load(tmp_path / "artifacts" / sha[:2] / sha)
    assert set(arrays.files) == {"input:X", "output:Y"}
    np.testing.assert_allclose(arrays["output:Y"], arrays["input:X"] @ W + np.array([0.1, -0.2, 0.3]), atol=1e-5)
