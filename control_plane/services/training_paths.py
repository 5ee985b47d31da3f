"""Look up a training job's entrypoint or data path under the operator's roots (the I/O half of
`domain.training_paths`, which decides).

It resolves symlinks and looks at what the resolved path is, but only inside the root: a path that resolves
outside is recorded as missing without a `stat`, so nothing here can tell a caller what exists elsewhere.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from control_plane.domain.training_paths import (
    Confinement,
    Observation,
    PathKind,
    choose,
    no_roots,
    relative_path,
)


def locate(rule: Confinement, text: str, roots: Sequence[Path]) -> Path:
    """The absolute, symlink-free path `text` names under one of `roots`; InvalidInput otherwise."""
    if not roots:
        raise no_roots(rule)
    relative = relative_path(rule, text)
    return choose(rule, relative, [observe(root, relative) for root in roots])


def observe(root: Path, relative: PurePosixPath) -> Observation:
    try:
        real_root = root.resolve(strict=True)
        target = (real_root / relative).resolve()
    except (OSError, RuntimeError):  # a root that is gone, a symlink loop, a name too long
        return Observation(root=root, target=root / relative, kind=PathKind.MISSING)
    if not target.is_relative_to(real_root):
        return Observation(root=real_root, target=target, kind=PathKind.MISSING)
    return Observation(root=real_root, target=target, kind=_kind(target))


def _kind(path: Path) -> PathKind:
    try:
        mode = path.stat().st_mode
    except (OSError, ValueError):
        return PathKind.MISSING
    if stat.S_ISREG(mode):
        return PathKind.FILE
    if stat.S_ISDIR(mode):
        return PathKind.DIRECTORY
    return PathKind.OTHER
