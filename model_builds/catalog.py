"""The catalog of GPU classes (build targets), one YAML file each under `targets/`.

Users add a class by adding a file. A malformed or self-contradictory file is refused as `FILE:LINE: reason`
(lines come from the YAML node marks, so the operator lands on the key at fault); the loader never guesses a
value that is missing and never lets two files define the same class.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from edge_agent.protocol.validation import describe_error
from edge_agent.protocol.vocabulary import GPU_PROVIDERS, ArtifactKind, ExecutionProvider, Precision

BUILTIN_TARGETS_DIR = Path(__file__).parent / "targets"
_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_VERSION = r"^\d+(\.\d+){0,3}$"
Loc = tuple[str | int, ...]


class CatalogError(ValueError):
    """A target file that cannot be used; the text is `FILE:LINE: reason`."""


class DeviceType(str, Enum):
    GPU = "gpu"
    CPU = "cpu"


class RuntimeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    preference: list[ArtifactKind] = Field(min_length=1, description="Artifact kinds, best first.")
    providers: list[ExecutionProvider] = Field(
        min_length=1, description="ONNX Runtime execution providers, best first."
    )


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME)
    description: str = ""
    arch: str = Field(pattern=r"^(x86_64|aarch64)$")
    device: DeviceType = Field(default=DeviceType.CPU, description="Defaults to gpu when compute capabilities exist.")
    compute_capabilities: list[str] = Field(default_factory=list)
    tensorrt_versions: list[str] = Field(default_factory=list)
    jetpack_versions: list[str] = Field(default_factory=list)
    platform: dict[str, str] = Field(default_factory=dict)
    accelerators: list[str] = Field(default_factory=list)
    precisions: list[Precision] = Field(min_length=1)
    kinds: list[ArtifactKind] = Field(default_factory=list, description="Allowed kinds; derived when left out.")
    runtime: RuntimeSpec
    provider_options: dict[ExecutionProvider, dict[str, str]] = Field(default_factory=dict)

    @field_validator("compute_capabilities")
    @classmethod
    def _cc_format(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(r"\d+\.\d+", value):
                raise ValueError(f"compute capability {value!r} must look like '8.7'")
        return values

    @field_validator("tensorrt_versions", "jetpack_versions")
    @classmethod
    def _version_format(cls, values: list[str]) -> list[str]:
        for value in values:
            if not re.fullmatch(_VERSION, value):
                raise ValueError(f"version {value!r} must look like '10.3.0'")
        return values

    @model_validator(mode="before")
    @classmethod
    def _derive_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "device" not in data and data.get("compute_capabilities"):
            data["device"] = DeviceType.GPU.value
        if "kinds" not in data:
            data["kinds"] = _derived_kinds(data)
        return data

    @property
    def has_gpu(self) -> bool:
        return self.device is DeviceType.GPU


def _derived_kinds(data: Mapping[str, Any]) -> list[str]:
    """Every kind the class's precisions allow; a plan only where there is a GPU and a known TensorRT."""
    precisions = {str(p) for p in data.get("precisions") or []}
    kinds = [ArtifactKind.ONNX.value]
    if Precision.FP16.value in precisions:
        kinds.append(ArtifactKind.ONNX_FP16.value)
    if Precision.INT8.value in precisions:
        kinds.append(ArtifactKind.ONNX_INT8_QDQ.value)
    if data.get("compute_capabilities") and data.get("tensorrt_versions"):
        kinds.append(ArtifactKind.TENSORRT_PLAN.value)
    return kinds


def contradictions(spec: TargetSpec) -> list[tuple[Loc, str]]:
    """Where a well-formed file says two things that cannot both hold; (key path, reason) each."""
    found: list[tuple[Loc, str]] = []
    kinds = set(spec.kinds)
    if spec.device is DeviceType.CPU and spec.compute_capabilities:
        found.append((("compute_capabilities",), "a cpu class cannot have GPU compute capabilities"))
    if spec.device is DeviceType.GPU and not spec.compute_capabilities:
        found.append((("device",), "a gpu class needs at least one compute capability"))
    if not spec.has_gpu:
        gpu = [p.value for p in spec.runtime.providers if p in GPU_PROVIDERS]
        if gpu:
            found.append((("runtime", "providers"), f"a class without a GPU cannot use {gpu}"))
        if spec.tensorrt_versions:
            found.append((("tensorrt_versions",), "a class without a GPU has no TensorRT"))
    if ArtifactKind.TENSORRT_PLAN in kinds:
        if not spec.has_gpu:
            found.append((("kinds",), "tensorrt-plan needs a GPU class (no compute capabilities)"))
        elif not spec.tensorrt_versions:
            found.append((("kinds",), "tensorrt-plan needs the TensorRT versions the class is known with"))
    for kind, precision in ((ArtifactKind.ONNX_FP16, Precision.FP16), (ArtifactKind.ONNX_INT8_QDQ, Precision.INT8)):
        if kind in kinds and precision not in spec.precisions:
            found.append((("kinds",), f"{kind.value} is listed but precision {precision.value} is not allowed"))
    for i, kind in enumerate(spec.runtime.preference):
        if kind not in kinds:
            found.append((("runtime", "preference", i), f"{kind.value} is preferred but not in kinds"))
    for provider, options in spec.provider_options.items():
        if provider not in spec.runtime.providers:
            reason = f"options for {provider.value}, which is not in providers"
            found.append((("provider_options", provider.value), reason))
        if options.get("trt_dla_enable", "false").lower() in ("1", "true") and "dla" not in spec.accelerators:
            found.append((("provider_options", provider.value), "DLA enabled but the class lists no dla accelerator"))
    return found


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


def _node_line(root: yaml.Node | None, loc: Sequence[str | int]) -> int:
    """1-based line of the deepest node `loc` reaches in the composed document (the parent for a missing key)."""
    if root is None:
        return 1
    node: yaml.Node = root
    line = node.start_mark.line + 1
    for part in loc:
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == str(part):
                    child, line = value, key.start_mark.line + 1
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            return line
        node = child
    return line


def _parse(path: Path) -> tuple[Any, yaml.Node | None]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise CatalogError(f"{path}:1: cannot read the file: {exc}") from exc
    try:
        return yaml.safe_load(text), yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise CatalogError(f"{path}:{line}: cannot read YAML: {problem}") from exc


def load_target_file(path: Path) -> TargetSpec:
    data, root = _parse(path)
    if not isinstance(data, dict):
        raise CatalogError(f"{path}:1: expected a mapping at the top level")
    try:
        spec = TargetSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        line = _node_line(root, tuple(first.get("loc", ())))
        raise CatalogError(f"{path}:{line}: {describe_error(first)}") from exc
    if spec.name != path.stem:
        line = _node_line(root, ("name",))
        raise CatalogError(f"{path}:{line}: name {spec.name!r} must equal the file name {path.stem!r}")
    problems = contradictions(spec)
    if problems:
        loc, reason = problems[0]
        raise CatalogError(f"{path}:{_node_line(root, loc)}: {'.'.join(map(str, loc))}: {reason}")
    return spec


def load_catalog(*dirs: Path) -> Catalog:
    """Targets from the built-in folder and then each extra folder; a class defined twice is refused."""
    specs: dict[str, tuple[TargetSpec, Path]] = {}
    for folder in (BUILTIN_TARGETS_DIR, *dirs):
        if not folder.is_dir():
            raise CatalogError(f"{folder}: targets folder does not exist")
        for path in sorted(folder.glob("*.yaml")):
            spec = load_target_file(path)
            if spec.name in specs:
                _, first = specs[spec.name]
                line = _node_line(_parse(path)[1], ("name",))
                raise CatalogError(f"{path}:{line}: class {spec.name!r} is already defined in {first}")
            specs[spec.name] = (spec, path)
    return Catalog(spec for spec, _ in specs.values())
