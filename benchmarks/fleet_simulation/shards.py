"""The simulated fleet spread over several processes, so that the simulator is not the benchmark's bottleneck.

One `Fleet` is N devices in one Python process: every apply, seal and MQTT packet of the fleet runs under that
process's GIL, so the simulator can use one core at most. At 1,000 devices its applies alone took 1.9 CPU-seconds
of an abort that lasted 3.2 s, the control plane 1.6 s: the rollouts waited on the simulator, not on the control
plane. `ShardedFleet` starts `processes` child processes (spawned, not forked: the parent runs threads), each a
`Fleet` of every `processes`-th device (`FleetOptions.shard`), built when the `ShardedFleet` is made and connecting
on `start`; it answers the part of `Fleet`'s interface the benchmark uses by asking each child over a pipe and
adding up the answers.

Each child fetches the artifacts it needs once into its own cache directory (no two processes write one file).
The reconnect storm and the CI smokes reach into single devices (`Fleet.devices`) and keep a one-process fleet.
Must never decide anything for a device (each child runs the agent's own core, as `Fleet` does).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.fleet_simulation.fleet import FaultPlan, Fleet, FleetOptions, describe_timeline
from benchmarks.fleet_simulation.ports import ArtifactCache
from edge_agent.protocol import Verifier

Reply = Any


def _serve(options: FleetOptions, public_key: str, cache_root: str, token: str, faults: FaultPlan, pipe: Any) -> None:
    """A child: run its share of the fleet and answer the parent's questions until told to stop."""
    fleet = Fleet(options, Verifier(public_key), ArtifactCache(Path(cache_root), token), faults)
    pipe.send(("ok", "ready"))  # started and built: the parent's clock for "every device online" starts after this
    pipe.recv()  # go
    fleet.start()
    handlers: dict[str, Callable[..., Reply]] = {
        "connected": fleet.connected_count,
        "idle": fleet.idle,
        "messages": fleet.messages,
        "marks": fleet.marks,
        "apply_errors": lambda: fleet.apply_errors,
        "faults": lambda plan: setattr(fleet, "faults", plan),
        "telemetry": lambda interval: setattr(fleet, "telemetry_interval_s", interval),
    }
    while True:
        command, args = pipe.recv()
        if command == "stop":
            fleet.stop()
            pipe.send(None)
            return
        try:
            pipe.send(("ok", handlers[command](*args)))
        except Exception as exc:  # the parent raises it with the command's name
            pipe.send(("error", f"{type(exc).__name__}: {exc}"))


class ShardedFleet:
    """`processes` children, each a `Fleet` of every `processes`-th device; what the benchmark asks of a fleet."""

    def __init__(
        self, options: FleetOptions, public_key: str, cache_root: Path, token: str, faults: FaultPlan, processes: int
    ) -> None:
        self.options = options
        self._ids = options.device_ids()
        self._faults = faults
        self._telemetry_interval_s = options.telemetry_interval_s
        context = multiprocessing.get_context("spawn")
        self._pipes: list[multiprocessing.connection.Connection] = []
        self._children: list[Any] = []
        for shard in range(processes):
            mine, theirs = context.Pipe()
            own = replace(options, shard=shard, shards=processes)
            root = str(cache_root / f"shard-{shard}")
            child = context.Process(
                target=_serve, args=(own, public_key, root, token, faults, theirs), name=f"sim-shard-{shard}"
            )
            self._pipes.append(mine)
            self._children.append(child)
            child.start()
        for shard, pipe in enumerate(self._pipes):  # each child imported and built its devices
            if not pipe.poll(120):
                raise RuntimeError(f"simulator shard {shard} did not start within 120 s")
            pipe.recv()

    def start(self) -> None:
        """The devices begin connecting, in every shard at once."""
        for pipe in self._pipes:
            pipe.send(("go", ()))

    def stop(self) -> None:
        for pipe in self._pipes:
            try:
                pipe.send(("stop", ()))
            except (BrokenPipeError, OSError):
                continue
        for pipe, child in zip(self._pipes, self._children, strict=True):
            if pipe.poll(30):
                pipe.recv()
            child.join(timeout=10)
            if child.is_alive():
                child.kill()
                child.join()

    def _ask(self, command: str, *args: Any) -> list[Reply]:
        for pipe in self._pipes:
            pipe.send((command, args))
        answers = []
        for shard, pipe in enumerate(self._pipes):
            status, value = pipe.recv()
            if status != "ok":
                raise RuntimeError(f"simulator shard {shard}: {command}: {value}")
            answers.append(value)
        return answers

    # -- what the benchmark asks of a fleet -------------------------------------------------------------------
    def device_ids(self) -> list[str]:
        return list(self._ids)

    def pids(self) -> list[int]:
        return [child.pid for child in self._children if child.pid is not None]

    def connected_count(self) -> int:
        return sum(self._ask("connected"))

    def wait_connected(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.connected_count() == len(self._ids):
                return True
            time.sleep(0.05)
        return False

    def idle(self) -> bool:
        return all(self._ask("idle"))

    def messages(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for counts in self._ask("messages"):
            total.update(counts)
        return total

    def timeline(self, since: float) -> str:
        got: list[float] = []
        sent: list[float] = []
        for received, reported in self._ask("marks", since):
            got.extend(received)
            sent.extend(reported)
        return describe_timeline(sorted(got), sorted(sent))

    @property
    def apply_errors(self) -> int:
        return sum(self._ask("apply_errors"))

    @property
    def faults(self) -> FaultPlan:
        return self._faults

    @faults.setter
    def faults(self, plan: FaultPlan) -> None:
        self._ask("faults", plan)
        self._faults = plan

    @property
    def telemetry_interval_s(self) -> float:
        return self._telemetry_interval_s

    @telemetry_interval_s.setter
    def telemetry_interval_s(self, interval: float) -> None:
        self._ask("telemetry", interval)
        self._telemetry_interval_s = interval
