"""Where a training job's code and data may come from: paths relative to roots an operator registered.

Nothing the API receives may run as code. A job's `entrypoint` is therefore a path relative to a training code root
(`training.code_dirs`) naming Python source inside it, and its `data.path` a path relative to a training data root
(`training.data_dirs`). This module decides from the path text and from what the service observed on disk; it does
no I/O. Its refusals must never depend on what exists outside the roots (no existence oracle) and never name an
absolute host path: they name the setting and, at most, the relative path the caller gave.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path, PurePosixPath

from control_plane.domain.errors import InvalidInput


class PathKind(str, Enum):
    FILE = "file"  # a regular file
    DIRECTORY = "directory"
    OTHER = "other"  # a device, socket, fifo, ...
    MISSING = "missing"  # absent, unreadable, or not looked at (it lies outside the root)


@dataclass(frozen=True)
class Confinement:
    """What one spec field may name, and under which setting's roots."""

    field: str
    root_noun: str  # "training code root"
    setting: str
    env: str
    wanted: str  # shown in refusals: what the field must name
    example: str
    kinds: frozenset[PathKind]
    suffix: str | None = None


ENTRYPOINT = Confinement(
    field="entrypoint",
    root_noun="training code root",
    setting="training.code_dirs",
    env="EDGE_CP_TRAINING__CODE_DIRS",
    wanted="a Python source file (.py)",
    example="demo_model/train.py",
    kinds=frozenset({PathKind.FILE}),
    suffix=".py",
)
DATA = Confinement(
    field="data.path",
    root_noun="training data root",
    setting="training.data_dirs",
    env="EDGE_CP_TRAINING__DATA_DIRS",
    wanted="a file or folder",
    example="blobs/train.csv",
    kinds=frozenset({PathKind.FILE, PathKind.DIRECTORY}),
)


@dataclass(frozen=True)
class Observation:
    """One root as the service found it: the root and root/RELATIVE with every symlink resolved."""

    root: Path
    target: Path
    kind: PathKind


def no_roots(rule: Confinement) -> InvalidInput:
    return InvalidInput(
        f"{rule.field} is refused: this control plane has no {rule.root_noun}; an operator must register "
        f"one with the setting {rule.setting} ({rule.env})"
    )


def relative_path(rule: Confinement, text: str) -> PurePosixPath:
    """`text` as a path relative to a root, or InvalidInput saying why; decided from the text alone."""
    where = f"a path relative to a {rule.root_noun} ({rule.setting}), e.g. {rule.example}"
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in text):
        raise InvalidInput(f"{rule.field} must be {where}: control characters are refused")
    path = PurePosixPath(text)
    if path.is_absolute() or text.startswith("~"):
        raise InvalidInput(f"{rule.field} must be {where}: absolute paths are refused")
    if ".." in path.parts:
        raise InvalidInput(f"{rule.field} must be {where}: '..' is refused")
    if not path.parts:
        raise InvalidInput(f"{rule.field} must be {where}: it names no file")
    if rule.suffix is not None and path.suffix != rule.suffix:
        raise InvalidInput(f"{rule.field} must be {where}: it must name a {rule.suffix} file")
    return path


def choose(rule: Confinement, relative: PurePosixPath, seen: Sequence[Observation]) -> Path:
    """The first root's resolved target that is inside that root and of a kind the rule accepts.

    A symlink that leaves its root, a missing path, a folder where a file is wanted, or a file of the wrong kind
    all get the same refusal, which names only the relative path given.
    """
    for observed in seen:
        if _acceptable(rule, observed):
            return observed.target
    raise InvalidInput(f"{rule.field} {str(relative)!r} is not {rule.wanted} in any root of {rule.setting}")


def _acceptable(rule: Confinement, observed: Observation) -> bool:
    return (
        observed.root.is_absolute()
        and observed.target.is_relative_to(observed.root)
        and observed.target != observed.root
        and observed.kind in rule.kinds
        and (rule.suffix is None or observed.target.suffix == rule.suffix)
    )
