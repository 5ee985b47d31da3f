"""Content-addressed artifact files on disk: `root/<sha[:2]>/<sha>`, written to a temp file and renamed.

A name that is not a lowercase sha256 is refused before it touches the file system (no path traversal).
It never deletes an artifact: builds and versions reference them by digest.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO

from edge_agent.protocol.messages import is_sha256

CHUNK = 1 << 20


class ArtifactTooLarge(ValueError):
    """A stream that goes past the size limit; nothing is kept."""


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tmp = root / ".tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path_for(self, sha256: str) -> Path | None:
        """The file of an artifact, or None if the digest is malformed or unknown."""
        if not is_sha256(sha256):
            return None
        path = self.root / sha256[:2] / sha256
        return path if path.is_file() else None

    def temp_path(self, suffix: str = "") -> Path:
        fd, name = tempfile.mkstemp(dir=self.tmp, suffix=suffix)
        os.close(fd)
        return Path(name)

    def receive(self, stream: BinaryIO, limit: int, suffix: str = "") -> tuple[Path, str, int]:
        """Copy a stream to a temp file, hashing as it goes; (temp path, sha256, size). Refuses past `limit`."""
        path = self.temp_path(suffix)
        digest = hashlib.sha256()
        size = 0
        try:
            with path.open("wb") as out:
                while chunk := stream.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise ArtifactTooLarge(f"the file is larger than the {limit}-byte limit")
                    digest.update(chunk)
                    out.write(chunk)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return path, digest.hexdigest(), size

    def adopt(self, temp: Path, sha256: str) -> Path:
        """Move a temp file whose digest is known into place (atomic rename); keep an existing copy."""
        final = self.root / sha256[:2] / sha256
        final.parent.mkdir(parents=True, exist_ok=True)
        if final.is_file():
            temp.unlink(missing_ok=True)
        else:
            temp.replace(final)
        return final

    def put_file(self, source: Path) -> tuple[str, int]:
        """Store a copy of `source`; (sha256, size)."""
        with source.open("rb") as stream:
            temp, sha, size = self.receive(stream, limit=1 << 62)
        self.adopt(temp, sha)
        return sha, size

    def work_dir(self) -> Path:
        """A scratch folder under the store (same file system, so results can be renamed into place)."""
        return Path(tempfile.mkdtemp(dir=self.tmp))

    def remove(self, sha256: str) -> bool:
        """Remove an artifact's file (a deleted model's); False when there was none."""
        path = self.path_for(sha256)
        if path is None:
            return False
        path.unlink(missing_ok=True)
        return True

    @staticmethod
    def remove_work_dir(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
