"""The GPU-class catalog: built-in targets load; malformed files are refused naming the file and the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_agent.protocol.vocabulary import Precision
from model_builds.catalog import CatalogError, load_catalog

GOOD = """\
name: {name}
arch: x86_64
compute_capabilities: ["8.9"]
precisions: [fp32, fp16]
runtime:
  preference: [onnx]
  providers: [CPUExecutionProvider]
"""


def test_builtin_catalog() -> None:
    catalog = load_catalog()
    assert catalog.names() == [
        "cpu-aarch64", "cpu-x86_64", "dgpu-ada", "dgpu-ampere", "dgpu-hopper", "dgpu-turing",
        "jetson-orin", "jetson-xavier",
    ]  # fmt: skip
    orin = catalog.get("jetson-orin")
    assert orin is not None
    assert (orin.arch, orin.compute_capabilities, orin.platform, orin.accelerators) == (
        "aarch64", ["8.7"], {"jetpack": "6"}, ["dla"]
    )  # fmt: skip
    ampere = catalog.get("dgpu-ampere")
    assert ampere is not None and ampere.compute_capabilities == ["8.0", "8.6"]
    cpu = catalog.get("cpu-x86_64")
    assert cpu is not None and Precision.FP32 in cpu.precisions and cpu.runtime.providers == ["CPUExecutionProvider"]


def test_user_folder_adds_a_class(tmp_path: Path) -> None:
    (tmp_path / "my-gpu.yaml").write_text(GOOD.format(name="my-gpu"))
    assert "my-gpu" in load_catalog(tmp_path).names()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        pytest.param("name: [unclosed", "cannot read YAML", id="bad-yaml"),
        pytest.param("- a\n- b\n", "expected a mapping", id="not-a-mapping"),
        pytest.param(GOOD.format(name="broken").replace("arch: x86_64\n", ""), "arch: Field required", id="no-arch"),
        pytest.param(GOOD.format(name="broken").replace("8.9", "sm89"), "compute capability", id="bad-cc"),
        pytest.param(GOOD.format(name="broken").replace("fp16", "fp8"), "precisions", id="bad-precision"),
        pytest.param(GOOD.format(name="broken") + "colour: red\n", "colour: Extra inputs", id="unknown-field"),
        pytest.param(GOOD.format(name="other"), "must equal the file name", id="name-mismatch"),
    ],
)
def test_malformed_file_is_refused_with_file_and_reason(tmp_path: Path, text: str, reason: str) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(CatalogError) as info:
        load_catalog(tmp_path)
    assert str(path) in str(info.value)
    assert reason in str(info.value)


def test_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="does not exist"):
        load_catalog(tmp_path / "nope")
