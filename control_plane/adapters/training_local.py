"""The `local` training backend: run an entrypoint as a subprocess, logs to a file.

Runs `python ENTRYPOINT --output-dir DIR --params-json JSON` (docs/api.md, "Training entrypoint contract").
It never interprets the output: the training service validates and registers it. Cancelling terminates the
child, then kills it if it does not exit.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TERMINATE_GRACE_S = 10.0


@dataclass(frozen=True)
class RunOutcome:
    returncode: int
    cancelled: bool


class LocalTrainingBackend:
    def __init__(self, python: str = sys.executable) -> None:
        self._python = python
        self._lock = threading.Lock()
        self._running: dict[str, subprocess.Popen[bytes]] = {}
        self._cancelled: set[str] = set()

    def run(
        self,
        job_id: str,
        entrypoint: Path,
        parameters: Mapping[str, object],
        output_dir: Path,
        log_file: Path,
        cwd: Path,
    ) -> RunOutcome:
        """Run to completion (blocking); stdout and stderr go to `log_file`."""
        command = [
            self._python,
            str(entrypoint),
            "--output-dir",
            str(output_dir),
            "--params-json",
            json.dumps(dict(parameters)),
        ]
        with log_file.open("ab") as log:
            process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            with self._lock:
                self._running[job_id] = process
            try:
                returncode = process.wait()
            finally:
                with self._lock:
                    self._running.pop(job_id, None)
                    cancelled = job_id in self._cancelled
                    self._cancelled.discard(job_id)
        return RunOutcome(returncode=returncode, cancelled=cancelled)

    def cancel_all(self) -> None:
        with self._lock:
            processes = dict(self._running)
            self._cancelled.update(processes)
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=TERMINATE_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
