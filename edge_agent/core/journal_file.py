"""The journal on disk: `data_dir/journal.json`, the file-system implementation of the JournalPort (core.ports).

Written atomically (temp file, fsync, os.replace, fsync of the directory) so a kill at any instant leaves either
the old or the new journal, never a torn one. The apply pieces of the core never import this module (an
import-linter contract): they reach the journal through the port, which `edge_agent.daemon.build_core` fills.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from pydantic import ValidationError

from edge_agent.core.errors import JournalError
from edge_agent.core.journal import JournalState


class Journal:
    """The journal file of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / "journal.json"

    def load(self) -> JournalState:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return JournalState()
        except OSError as exc:
            raise JournalError(f"cannot read journal {self.path}: {exc}") from exc
        try:
            return JournalState.model_validate_json(text)
        except ValidationError as exc:
            raise JournalError(f"journal {self.path} is corrupt: {exc.errors()[0]['msg']}") from exc

    def save(self, state: JournalState) -> None:
        write_atomic(self.path, json.dumps(state.model_dump(mode="json"), indent=2).encode())


def write_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data` so that readers and crashes see the old or the new content, nothing else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise JournalError(f"cannot write {path}: {exc}") from exc
