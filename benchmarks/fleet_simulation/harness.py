"""A whole simulated deployment for the benchmark and the CI smoke: a real Mosquitto with N device accounts, an
`edgectl server` process with default settings (its data in a temporary directory; extra EDGE_CP_* settings, e.g.
a PostgreSQL URL, come in `control_plane_env`), the N devices enrolled, model versions uploaded and built, and
the simulated fleet connected.

Reuses the test suite's `ControlPlaneProcess` and its ONNX model builders (tests/), as benchmarks/rollback.py does.
Setup times are measured apart (`Harness.setup_s`): they are not what the benchmark's goals are about.
"""

from __future__ import annotations

import contextlib
import functools
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

from benchmarks.fleet_simulation.broker import FleetBroker, device_password
from benchmarks.fleet_simulation.control import enroll_fleet, list_devices, online, signing_key
from benchmarks.fleet_simulation.fleet import FaultPlan, Fleet, FleetOptions
from benchmarks.fleet_simulation.ports import ArtifactCache
from benchmarks.fleet_simulation.shards import ShardedFleet
from edge_agent.protocol import Verifier
from tests.support import ADMIN_TOKEN, ControlPlaneProcess, Mosquitto

MODEL = "sim-model"


@dataclass
class Harness:
    broker: FleetBroker
    control_plane: ControlPlaneProcess
    api: httpx.Client
    fleet: Fleet | ShardedFleet
    versions: list[int]
    setup_s: dict[str, float] = field(default_factory=dict)
    fleet_started_at: float = 0.0  # time.monotonic() when the devices began connecting

    @property
    def ids(self) -> set[str]:
        return set(self.fleet.device_ids())

    def fleet_pids(self) -> list[int]:
        """The processes simulating the fleet: the simulator's shards, or this one."""
        return self.fleet.pids() if isinstance(self.fleet, ShardedFleet) else [os.getpid()]

    def all_online(self) -> bool:
        return online(list_devices(self.api), self.ids) == len(self.ids)

    def wait(self, condition: Any, timeout: float, what: str, every: float = 0.1, describe: Any = None) -> float:
        """Seconds until `condition()` held; RuntimeError naming `what` after `timeout` (a safety limit), with
        what `describe()` says of the state it was left in when given."""
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > timeout:
                detail = f":\n{describe()}" if describe is not None else ""
                raise RuntimeError(f"timed out after {timeout} s waiting for {what}{detail}")
            time.sleep(every)
        return time.monotonic() - start


def push_versions(api: httpx.Client, count: int) -> list[int]:
    """`count` versions of one small linear ONNX model, uploaded and built for cpu-x86_64."""
    from tests.integration.rollouts.models import inputs_only, linear, push_and_build

    return [int(push_and_build(api, MODEL, linear(seed), inputs_only())["version"]) for seed in range(1, count + 1)]


@contextlib.contextmanager
def deployment(
    count: int,
    versions: int = 2,
    options: dict[str, Any] | None = None,
    faults: FaultPlan | None = None,
    control_plane_env: dict[str, str] | None = None,
    root: Path | None = None,
    processes: int = 1,
) -> Iterator[Harness]:
    """Everything started and the fleet online in the API; stopped (in reverse) on exit. `processes` > 1: the
    fleet is simulated by that many processes (shards.py), else in this one."""
    with contextlib.ExitStack() as stack:
        if root is None:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="fleet-sim-")))
        setup: dict[str, float] = {}
        start = time.monotonic()
        probe = FleetOptions(count=count, broker_host="", broker_port=0, passwords=str, **(options or {}))
        broker = FleetBroker(root / "broker", probe.device_ids()).start()
        stack.callback(broker.stop)
        setup["broker (password file of N users)"] = time.monotonic() - start

        start = time.monotonic()
        control_plane = ControlPlaneProcess(
            cast(Mosquitto, broker), root / "cp-data", extra_env=dict(control_plane_env or {})
        )
        stack.callback(control_plane.stop)
        control_plane.start(timeout=120)
        api = stack.enter_context(control_plane.client())
        setup["control plane start"] = time.monotonic() - start

        start = time.monotonic()
        enroll_fleet(api, probe.device_ids(), probe.labels)
        setup["enroll N devices (PUT /v1/devices/{id}/enrollment)"] = time.monotonic() - start

        start = time.monotonic()
        built = push_versions(api, versions)
        setup["upload + build versions"] = time.monotonic() - start

        fleet_options = FleetOptions(
            count=count,
            broker_host=broker.host,
            broker_port=broker.port,
            passwords=functools.partial(device_password, broker.seed),
            **(options or {}),
        )
        fleet: Fleet | ShardedFleet
        if processes > 1:
            key = signing_key(api)
            fleet = ShardedFleet(
                fleet_options, key, root / "artifact-cache", ADMIN_TOKEN, faults or FaultPlan(), processes
            )
        else:
            cache = ArtifactCache(root / "artifact-cache", ADMIN_TOKEN)
            fleet = Fleet(fleet_options, Verifier(signing_key(api)), cache, faults)
        harness = Harness(broker, control_plane, api, fleet, built, setup)
        stack.callback(fleet.stop)
        start = harness.fleet_started_at = time.monotonic()
        fleet.start()
        harness.wait(lambda: fleet.wait_connected(1), timeout=max(60, count / 20), what="every device connected")
        harness.setup_s["connect N devices"] = time.monotonic() - start
        yield harness
