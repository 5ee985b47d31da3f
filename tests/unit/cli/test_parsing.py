"""Selectors and training spec files: what an operator types is checked before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.cli.parsing import SpecError, load_training_spec, parse_selectors
from control_plane.domain.selectors import Selector


def test_repeated_selector_options_merge_into_one_selector() -> None:
    chosen = parse_selectors(["site=a", "line=3,gpu_class=cpu-x86_64"])
    assert chosen == Selector(labels={"site": "a", "line": "3"}, gpu_class="cpu-x86_64")
    assert chosen.as_text() == "site=a,line=3,gpu_class=cpu-x86_64"
    assert parse_selectors([]).as_text() is None
    with pytest.raises(ValueError, match="twice"):
        parse_selectors(["site=a", "site=b"])


GOOD_SPEC = """
name: blobs
model_name: demo-classifier
entrypoint: train.py
parameters: {epochs: 3}
data: {path: data}
"""


def _spec(tmp_path: Path, text: str) -> Path:
    (tmp_path / "train.py").write_text("print('hi')\n")
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    return path


def test_good_spec_sends_paths_relative_to_the_servers_roots(tmp_path: Path) -> None:
    body = load_training_spec(_spec(tmp_path, GOOD_SPEC))
    assert body["entrypoint"] == "train.py"  # under a training code root of the server, not of this machine
    assert body["data"]["path"] == "data"
    assert body["parameters"] == {"epochs": 3}
    assert body["model_name"] == "demo-classifier"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        pytest.param("name: x\nentrypoint: train.py\n", "field `model_name`: Field required", id="missing-field"),
        pytest.param(GOOD_SPEC + "gpus: 2\n", "field `gpus`", id="unknown-field"),
        pytest.param(GOOD_SPEC.replace("{epochs: 3}", "{epochs: [1, 2]}"), "field `parameters.epochs", id="bad-type"),
        pytest.param(GOOD_SPEC.replace("blobs", "has space"), "field `name`", id="bad-name"),
        pytest.param("name: [unclosed\n", "not valid YAML", id="bad-yaml"),
        pytest.param("- a\n- b\n", "expected a mapping", id="not-a-mapping"),
        pytest.param(
            GOOD_SPEC.replace("train.py", "/srv/code/train.py"),
            "entrypoint must be a path relative to a training code root (training.code_dirs)",
            id="absolute-entrypoint",
        ),
        pytest.param(GOOD_SPEC.replace("train.py", "../train.py"), "'..' is refused", id="dotdot-entrypoint"),
        pytest.param(GOOD_SPEC.replace("train.py", "model.onnx"), "must name a .py file", id="not-py"),
        pytest.param(
            GOOD_SPEC.replace("{path: data}", "{path: /etc}"),
            "data.path must be a path relative to a training data root (training.data_dirs)",
            id="absolute-data",
        ),
    ],
)
def test_bad_spec_names_file_and_field(tmp_path: Path, text: str, fragment: str) -> None:
    path = _spec(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_training_spec(path)
    assert str(caught.value).startswith(f"{path}:")
    assert fragment in str(caught.value)


def test_unreadable_spec(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_training_spec(tmp_path / "absent.yaml")
