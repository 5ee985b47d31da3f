"""Names in the data directory: the slot directory of an artifact and the two files every slot holds. Pure.

Shared by the store (which creates them) and the apply pieces (which journal a slot's name and load its files
through the store's paths). Must never touch the file system.
"""

from __future__ import annotations

from edge_agent.core.artifacts import Choice
from edge_agent.protocol import ModelAssignment

MODEL_FILE = "model.onnx"
SELFTEST_FILE = "selftest.npz"


def slot_name(model: ModelAssignment, choice: Choice) -> str:
    """The slot of the artifact chosen for this device (primary or fallback): its version and digest."""
    return f"v{model.version}-{choice.artifact.sha256[:12]}"
