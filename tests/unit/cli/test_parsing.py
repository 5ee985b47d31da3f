"""Selectors and training spec files: what an operator types is checked before anything is sent."""

from __future__ import annotations

from pathlib import Path

import pytest

from control_plane.cli.parsing import SpecError, load_training_spec, parse_selector, parse_selectors, selector_query


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(None, {}, id="none"),
        pytest.param("", {}, id="empty"),
        pytest.param("site=factory-a", {"site": "factory-a"}, id="one"),
        pytest.param(" site = a , line=3 ", {"site": "a", "line": "3"}, id="spaces"),
        pytest.param("site=a,,", {"site": "a"}, id="trailing-commas"),
        pytest.param("k8s.io/zone=eu", {"k8s.io/zone": "eu"}, id="slash-key"),
        pytest.param("tier=", {"tier": ""}, id="empty-value"),
    ],
)
def test_selector_parses(text: str | None, expected: dict[str, str]) -> None:
    assert parse_selector(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("site", "is not KEY=VALUE", id="no-equals"),
        pytest.param("=a", "is not KEY=VALUE", id="no-key"),
        pytest.param("bad key=a", "label key", id="space-in-key"),
        pytest.param("site=a,site=b", "given twice", id="conflict"),
    ],
)
def test_selector_errors_say_why(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_selector(text)


def test_repeated_selectors_merge_and_render_back() -> None:
    labels = parse_selectors(["site=a", "line=3"])
    assert labels == {"site": "a", "line": "3"}
    assert selector_query(labels) == "site=a,line=3"
    assert selector_query({}) is None
    with pytest.raises(ValueError, match="given twice"):
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
