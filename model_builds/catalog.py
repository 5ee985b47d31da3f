"""The catalog of GPU classes (build targets), one YAML file each under `targets/`.

Users add a class by adding a file. A malformed file is refused with its path and the reason; the loader
never guesses a value that is missing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

BUILTIN_TARGETS_DIR = Path(__file__).parent / "targets"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"


class Precision(str, Enum):
    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"


class CatalogError(ValueError):
    """A target file that cannot be used; the text names the file and the reason."""


class RuntimeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preference: list[str] = Field(min_length=1, description="Artifact kinds, best first.")
    providers: list[str] = Field(min_length=1, description="ONNX Runtime execution providers, best first.")


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    description: str = ""
    arch: str = Field(pattern=r"^(x86_64|aarch64)$")
    compute_capabilities: list[str] = Field(default_factory=list)
    platform: dict[str, str] = Field(default_factory=dict)
    accelerators: list[str] = Field(default_factory=list)
    precisions: list[Precision] = Field(min_length=1)
    runtime: RuntimeSpec

    @field_validator("compute_capabilities")
    @classmethod
    def _cc_format(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(r"\d+\.\d+", value):
                raise ValueError(f"compute capability {value!r} must look like '8.7'")
        return values


class Catalog:
    """The loaded targets by name."""

    def __init__(self, targets: Iterable[TargetSpec]) -> None:
        self._targets: dict[str, TargetSpec] = {t.name: t for t in sorted(targets, key=lambda t: t.name)}

    def get(self, name: str) -> TargetSpec | None:
        return self._targets.get(name)

    def names(self) -> list[str]:
        return list(self._targets)

    def all(self) -> list[TargetSpec]:
        return list(self._targets.values())

    def as_mapping(self) -> Mapping[str, TargetSpec]:
        return dict(self._targets)


def load_target_file(path: Path) -> TargetSpec:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CatalogError(f"{path}: cannot read YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise CatalogError(f"{path}: expected a mapping at the top level")
    try:
        spec = TargetSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "(root)"
        raise CatalogError(f"{path}: {where}: {first.get('msg', 'invalid')}") from exc
    if spec.name != path.stem:
        raise CatalogError(f"{path}: name {spec.name!r} must equal the file name {path.stem!r}")
    return spec


def load_catalog(*dirs: Path) -> Catalog:
    """Targets from the built-in folder and then each extra folder; a later file overrides a same-named one."""
    specs: dict[str, TargetSpec] = {}
    for folder in (BUILTIN_TARGETS_DIR, *dirs):
        if not folder.is_dir():
            raise CatalogError(f"{folder}: targets folder does not exist")
        for path in sorted(folder.glob("*.yaml")):
            spec = load_target_file(path)
            specs[spec.name] = spec
    return Catalog(specs.values())
