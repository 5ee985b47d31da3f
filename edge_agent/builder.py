"""`builder: true`: this agent volunteers as a build worker for its own GPU class, in a background thread.

A TensorRT plan can only be built on the GPU and TensorRT release it is for, so one device of a class can build
for the rest of it. The thread runs model_builds' builder loop against the control plane's REST builder routes
with the device's `control_plane_token` (a `builder` token: the control plane leases builds to that identity, and
accepts this device's TensorRT plans only if an admin registered it for its hardware), labelled `agent:{device_id}`,
claiming only builds of this device's GPU class. The build toolchain is imported here,
lazily, when the thread starts: an agent that is not a builder never imports it. Must never let a build failure
reach the agent: the loop reports failed builds to the control plane and goes on; serving is unaffected.
"""

from __future__ import annotations

import dataclasses
import logging
import ssl
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from edge_agent.protocol import HardwareFacts

if TYPE_CHECKING:
    from model_builds.protocol import BuilderInfo

log = logging.getLogger(__name__)
STOP_TIMEOUT_S = 30.0


def builder_id(device_id: str) -> str:
    return f"agent:{device_id}"


def own_class_info(detected: BuilderInfo, facts: HardwareFacts) -> BuilderInfo:
    """What this device may build: what its toolchain can, for its own GPU class only."""
    return dataclasses.replace(detected, gpu_class=facts.gpu_class)


class BuilderThread:
    """The builder loop in one daemon thread; `stop()` asks it to finish and waits for it."""

    def __init__(
        self,
        control_plane_url: str,
        device_id: str,
        facts: HardwareFacts,
        workdir: Path,
        token: str | None = None,
        ca_file: Path | None = None,
    ) -> None:
        self._url = control_plane_url
        self._ca_file = ca_file
        self._id = builder_id(device_id)
        self._facts = facts
        self._workdir = workdir
        self._token = token
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="builder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=STOP_TIMEOUT_S)
        if self._thread.is_alive():
            log.warning("builder thread still busy after %.0f s; leaving it (its lease will expire)", STOP_TIMEOUT_S)

    def _run(self) -> None:
        if not self._token:
            log.error("builder: true, but no control_plane_token: the control plane refuses builders without a token")
            return
        try:
            from model_builds.capabilities import detect_builder
            from model_builds.remote_queue import HttpBuildQueue
            from model_builds.worker import run_builder
        except ImportError as exc:
            log.error("builder: true, but the build toolchain cannot be imported: %s", exc)
            return
        try:
            info = own_class_info(detect_builder(self._id), self._facts)
            log.info("building for %s as %s: kinds %s", info.gpu_class, self._id, [k.value for k in info.kinds])
            self._workdir.mkdir(parents=True, exist_ok=True)
            verify = ssl.create_default_context(cafile=str(self._ca_file)) if self._ca_file else True
            queue = HttpBuildQueue(self._url, builder_id=self._id, token=self._token, verify=verify)
        except Exception:
            log.exception("cannot start building; this agent will not build until it restarts")
            return
        try:
            run_builder(queue, info, self._workdir, self._stop)
        except Exception:
            log.exception("the builder loop stopped; this agent no longer builds until it restarts")
        finally:
            queue.close()
