"""The sha256 and size of a file on disk, read in chunks: how builders check a download and how the control plane
names a file it wrote itself. Standard library only; it never writes."""

from __future__ import annotations

import hashlib
from pathlib import Path

CHUNK = 1 << 20


def file_digest(path: Path) -> tuple[str, int]:
    """(sha256 hex digest, size in bytes) of the file at `path`."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
