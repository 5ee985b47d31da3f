"""An exclusive fcntl lock on the data directory, so a running daemon and `edge-agent apply` never apply at once.

The lock is released by the kernel when the holder dies, so a killed process never leaves it stuck.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edge_agent.core.errors import LockBusyError


@contextmanager
def apply_lock(data_dir: Path, timeout_s: float = 0.0) -> Iterator[None]:
    """Hold the data directory's apply lock; LockBusyError if another process holds it past `timeout_s`."""
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "apply.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _acquire(fd, data_dir, timeout_s)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, data_dir: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                raise LockBusyError(f"another edge-agent process is applying in {data_dir}") from None
            time.sleep(0.1)
