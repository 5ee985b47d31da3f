"""Writing a secret to disk: readable by its owner only from the first byte, and atomically (a crash leaves the old
file or none, never half a key). The one way the control plane writes keys, tokens and secret variables."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes | str) -> None:
    """Replace `path` with `data` (text is UTF-8), mode 0600 from the moment it exists."""
    partial = path.with_name(path.name + ".tmp")
    partial.unlink(missing_ok=True)
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    partial.replace(path)
