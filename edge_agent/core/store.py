"""The data directory's files: staging for downloads, one slot directory per installed model version.

Layout: `staging/{sha256}` (+ `.part` while downloading), `slots/{model}/{slot}/model.onnx|selftest.npz`.
`Store` is the file-system implementation of the core's SlotStore port (core.ports); the apply pieces reach the
files only through the port (an import-linter contract keeps them from importing this module). Never deletes the
active or the previous slot of a model; never trusts a file it has not hashed.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

from edge_agent.core.artifacts import Choice
from edge_agent.core.layout import MODEL_FILE, SELFTEST_FILE, slot_name
from edge_agent.protocol import ArtifactRef, ModelAssignment


def file_digest(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def mismatch(path: Path, artifact: ArtifactRef) -> str | None:
    """None when `path` holds exactly the artifact's bytes; else what differs."""
    sha, size = file_digest(path)
    if size != artifact.size:
        return f"size {size} bytes, expected {artifact.size}"
    if sha != artifact.sha256:
        return f"sha256 {sha}, expected {artifact.sha256}"
    return None


class Store:
    """The SlotStore of one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.staging = data_dir / "staging"
        self.slots = data_dir / "slots"

    def staged(self, artifact: ArtifactRef) -> Path:
        return self.staging / artifact.sha256

    def holds(self, path: Path, artifact: ArtifactRef) -> bool:
        return _holds(path, artifact)

    def mismatch(self, path: Path, artifact: ArtifactRef) -> str | None:
        return mismatch(path, artifact)

    def discard(self, path: Path) -> None:
        path.unlink(missing_ok=True)

    def slot_dir(self, name: str, slot: str) -> Path:
        return self.slots / name / slot

    def has_slot(self, name: str, slot: str) -> bool:
        return self.slot_dir(name, slot).is_dir()

    def installed(self, model: ModelAssignment, choice: Choice) -> Path | None:
        """The slot of this artifact when it already holds both files, hashed now (a restore); else None."""
        slot = self.slot_dir(model.name, slot_name(model, choice))
        if _holds(slot / MODEL_FILE, choice.artifact) and _holds(slot / SELFTEST_FILE, model.selftest.artifact):
            return slot
        return None

    def install(self, model: ModelAssignment, choice: Choice, model_file: Path, selftest_file: Path) -> Path:
        """Slot directory holding both files, built aside and renamed into place (never half-installed)."""
        final = self.slot_dir(model.name, slot_name(model, choice))
        if _holds(final / MODEL_FILE, choice.artifact) and _holds(final / SELFTEST_FILE, model.selftest.artifact):
            return final
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _link_or_copy(model_file, tmp / MODEL_FILE)
        _link_or_copy(selftest_file, tmp / SELFTEST_FILE)
        shutil.rmtree(final, ignore_errors=True)
        tmp.replace(final)
        return final

    def remove_half_installed(self) -> None:
        for tmp in self.slots.glob("*/*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)

    def collect_garbage(self, keep: Iterable[tuple[str, str]], clear_staging: bool) -> None:
        """Delete slot directories not in `keep` ((model, slot) pairs); optionally empty staging."""
        wanted = set(keep)
        for slot in self.slots.glob("*/*"):
            if (slot.parent.name, slot.name) not in wanted:
                shutil.rmtree(slot, ignore_errors=True)
        for model_dir in self.slots.glob("*"):
            if model_dir.is_dir() and not any(model_dir.iterdir()):
                model_dir.rmdir()
        if clear_staging:
            shutil.rmtree(self.staging, ignore_errors=True)


def _holds(path: Path, artifact: ArtifactRef) -> bool:
    return path.exists() and mismatch(path, artifact) is None


def _link_or_copy(source: Path, dest: Path) -> None:
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)
