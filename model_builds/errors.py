"""The build toolchain's one error for "this build cannot be made here", shared by every step.

It must never wrap a programming error: only outcomes a builder reports as the build's failure.
"""

from __future__ import annotations


class BuildError(RuntimeError):
    """This builder cannot build the task; the text says why (it is recorded as the build's error)."""
