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


def test_good_spec_resolves_relative_paths_against_its_folder(tmp_path: Path) -> None:
    body = load_training_spec(_spec(tmp_path, GOOD_SPEC))
    assert body["entrypoint"] == str((tmp_path / "train.py").resolve())
    assert body["data"]["path"] == str((tmp_path / "data").resolve())
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
        pytest.param(GOOD_SPEC.replace("train.py", "missing.py"), "entrypoint: no such file", id="no-entrypoint"),
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
