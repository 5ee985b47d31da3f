"""The `local` training backend: run an entrypoint as a subprocess, logs to a file.

Runs the entrypoint as `ENTRYPOINT --output-dir DIR --params-json JSON` (docs/api.md, "Training entrypoint
contract") with this interpreter in isolated mode (`-I`: no PYTHON* variables, no user site-packages, no current
folder on sys.path), cwd the job's folder, and without the control plane's own `EDGE_CP_*` settings (its
secrets) in the environment. The file is read and compiled as Python source by a small bootstrap rather than
handed to `python FILE`: `python FILE` runs any zip archive with a `__main__.py` as an application, whatever the
file is called, and a training entrypoint must only ever be source. The service has already checked that it lies
under a registered code root. It never interprets the output: the training service validates and registers it.
Cancelling terminates the child, then kills it if it does not exit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

TERMINATE_GRACE_S = 10.0
CONTROL_PLANE_ENV_PREFIX = "EDGE_CP_"

# argv: [-c, ENTRYPOINT, ARGS...]. Runs ENTRYPOINT as the __main__ module, with its folder first on sys.path as
# `python ENTRYPOINT` would (isolated mode leaves it out), but only ever as source: a zip fails to compile.
SOURCE_BOOTSTRAP = """\
import os, sys, types
path = sys.argv[1]
sys.argv = sys.argv[1:]
sys.path.insert(0, os.path.dirname(path))
with open(path, "rb") as source:
    code = compile(source.read(), path, "exec", dont_inherit=True)
main = types.ModuleType("__main__")
main.__file__ = path
sys.modules["__main__"] = main
del os, sys, types, path, source
exec(code, main.__dict__)
"""


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
            "-I",
            "-c",
            SOURCE_BOOTSTRAP,
            str(entrypoint),
            "--output-dir",
            str(output_dir),
            "--params-json",
            json.dumps(dict(parameters)),
        ]
        with log_file.open("ab") as log:
            process = subprocess.Popen(
                command, cwd=cwd, env=_job_env(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
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


def _job_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(CONTROL_PLANE_ENV_PREFIX)}
