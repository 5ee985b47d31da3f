"""Fleet-scale benchmark: N simulated devices (benchmarks/fleet_simulation: real MQTT connections, each running the
agent's own core) against a real Mosquitto and an `edgectl server` process with default settings.

Phases, for each N and database: all devices online in the API (from the first connect); an all-at-once rollout
POST -> `succeeded`; a rollout with a long bake to every device, then an operator abort -> `rolled_back`; canary +
2 waves -> `succeeded`; a latency gate (max_p99_ms) tripping on a slow-serving share -> `rolled_back`. For each:
seconds, control-plane CPU-seconds (and per device), peak RSS, `GET /v1/rollouts/{id}` p50/p99 from a 5/s poller,
messages per device (sent by the devices + desired states they received), and the ratio to the broker alone
moving the same number of messages (a bare paho publisher and subscriber, measured in the same run).

    .venv/bin/python benchmarks/fleet_scale.py [--devices 1000,5000,10000] [--database sqlite|postgresql|both]

Setup (password file, enrollment, builds) is timed apart and printed, not part of the goals. Not a test.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleet_simulation.broker import CONTROL_PLANE_USER
from benchmarks.fleet_simulation.control import list_devices, online, phase, rollout
from benchmarks.fleet_simulation.fleet import FaultPlan
from benchmarks.fleet_simulation.harness import MODEL, Harness, deployment
from benchmarks.fleet_simulation.measure import PhaseProbe, broker_alone
from tests.support import mosquitto_available, password_for

GOALS = "goals (2 cores, 10k): POST->succeeded <= 30 s; abort->rolled_back <= 10 s (1k: <= 2 s); <= 1 ms CPU/device"
FINAL = ("succeeded", "aborted", "rolled_back")
PAYLOAD_BYTES = 700  # about a sealed event or reported state


@dataclass
class Row:
    devices: int
    database: str
    phase: str
    seconds: float
    cpu_s: float
    peak_rss_mb: float
    p50_ms: float | None
    p99_ms: float | None
    messages_per_device: float
    outcome: str
    broker_alone_s: float | None = None


def fleet_messages(h: Harness) -> int:
    return sum(h.fleet.messages().values())


def run_rollout(h: Harness, name: str, body: dict[str, Any], final: str, timeout: float, db: str) -> Row:
    """POST `body`, wait for a final phase; measured from the POST."""
    n = len(h.fleet.devices)
    before = fleet_messages(h)
    start = time.monotonic()
    rollout_id = rollout(h.api, body)
    with PhaseProbe(h.control_plane.process.pid, h.api, f"/v1/rollouts/{rollout_id}") as probe:  # type: ignore[union-attr]
        h.wait(lambda: phase(h.api, rollout_id) in FINAL, timeout, f"{name} to finish", every=0.2)
        seconds = time.monotonic() - start
    outcome = phase(h.api, rollout_id)
    p50, p99 = probe.p50_p99()
    sent = (fleet_messages(h) - before) / n
    return Row(n, db, name, seconds, probe.cpu_s, probe.peak_rss_mb, p50, p99, sent, f"{outcome} (want {final})")


def run_abort(h: Harness, version: int, timeout: float, db: str) -> Row:
    """Every device moved to `version` with a long bake, then an operator abort: abort -> `rolled_back`."""
    n = len(h.fleet.devices)
    rollout_id = rollout(h.api, everyone(version) | {"bake_s": 3600})
    h.wait(lambda: activated(h, rollout_id) == n, timeout, "every device activated before the abort", every=0.5)
    h.wait(h.fleet.idle, timeout, "the simulator idle")
    before = fleet_messages(h)
    with PhaseProbe(h.control_plane.process.pid, h.api, f"/v1/rollouts/{rollout_id}") as probe:  # type: ignore[union-attr]
        start = time.monotonic()
        answer = h.api.post(f"/v1/rollouts/{rollout_id}/abort")
        if answer.status_code >= 300:
            raise RuntimeError(f"abort refused: {answer.status_code} {answer.text}")
        h.wait(lambda: phase(h.api, rollout_id) in FINAL, timeout, "the abort to finish", every=0.2)
        seconds = time.monotonic() - start
    p50, p99 = probe.p50_p99()
    sent = (fleet_messages(h) - before) / n
    outcome = phase(h.api, rollout_id)
    return Row(n, db, "abort -> rolled_back", seconds, probe.cpu_s, probe.peak_rss_mb, p50, p99, sent, outcome)


def activated(h: Harness, rollout_id: str) -> int:
    counts: dict[str, int] = h.api.get(f"/v1/rollouts/{rollout_id}", timeout=120).json().get("counts") or {}
    return counts.get("activated", 0)


def everyone(version: int) -> dict[str, Any]:
    return {"model": MODEL, "version": version, "selector": {"labels": {"fleet": "sim"}}}


def run_online(h: Harness, timeout: float, db: str) -> Row:
    ids = h.ids
    with PhaseProbe(h.control_plane.process.pid) as probe:  # type: ignore[union-attr]
        h.wait(lambda: online(list_devices(h.api), ids) == len(ids), timeout, "every device online", every=0.5)
    seconds = time.monotonic() - h.fleet_started_at
    n = len(ids)
    return Row(n, db, "all online in API", seconds, probe.cpu_s, probe.peak_rss_mb, None, None, 2.0, "online")


def phases(h: Harness, db: str, timeout: float) -> list[Row]:
    """Every phase in order; a phase that does not finish in `timeout` ends the run with a row that says so (the
    phases before it keep their figures)."""
    v1, v2, v3, v4 = h.versions
    strategy = {"type": "canary", "canary": {"percent": 5}, "waves": [{"percent": 45}, {"percent": 50}]}
    canary = everyone(v3) | {"strategy": strategy, "max_unavailable": {"percent": 100}}
    gate = {"min_requests": 20, "max_p99_ms": 100, "on_fail": "abort"}

    def latency_gate() -> Row:
        h.fleet.faults = FaultPlan(slow_serving_share=0.1, slow_version=v4, slow_latency_ms=500)
        h.fleet.telemetry_interval_s = 2.0
        try:
            body = everyone(v4) | {"bake_s": 60, "gates": gate}
            return run_rollout(h, "latency gate trips -> rolled_back", body, "rolled_back", timeout, db)
        finally:
            h.fleet.telemetry_interval_s = 0.0

    def rollout_to(name: str, body: dict[str, Any], final: str) -> Callable[[], Row]:
        return lambda: run_rollout(h, name, body, final, timeout, db)

    steps: list[tuple[str, Callable[[], Row]]] = [
        ("all online in API", lambda: run_online(h, timeout, db)),
        ("all-at-once -> succeeded", rollout_to("all-at-once -> succeeded", everyone(v1), "succeeded")),
        ("abort -> rolled_back", lambda: run_abort(h, v2, timeout, db)),
        ("canary + 2 waves -> succeeded", rollout_to("canary + 2 waves -> succeeded", canary, "succeeded")),
        ("latency gate trips -> rolled_back", latency_gate),
    ]
    rows: list[Row] = []
    for name, measure in steps:
        try:
            rows.append(measure())
        except RuntimeError as exc:
            rows.append(Row(len(h.ids), db, name, timeout, 0.0, 0.0, None, None, 0.0, f"did not finish: {exc}"))
            break
    return rows


def baselines(h: Harness, rows: list[Row]) -> None:
    """The broker alone moving each phase's messages (through the same Mosquitto, the control plane idle)."""
    for row in rows:
        total = round(row.messages_per_device * row.devices)
        if total:
            row.broker_alone_s = broker_alone(
                h.broker.host, h.broker.port, CONTROL_PLANE_USER, password_for(CONTROL_PLANE_USER), total, PAYLOAD_BYTES
            )


def database_env(kind: str) -> tuple[dict[str, str], Any]:
    if kind == "sqlite":
        return {}, None
    try:
        from tests.postgres import PostgresServer
    except ImportError as exc:
        raise RuntimeError(f"tests/postgres.py is not there yet ({exc})") from exc
    server = PostgresServer.start()
    return {"EDGE_CP_DATABASE_URL": server.create_database(f"fleet_{time.time_ns() % 10**9}")}, server


def run(count: int, db: str, timeout: float) -> list[Row]:
    env, server = database_env(db)
    try:
        with deployment(count, versions=4, options={"apply_jitter_s": 0.2}, control_plane_env=env) as h:
            print(f"\n{count} devices, {db}: setup " + ", ".join(f"{k} {v:.1f} s" for k, v in h.setup_s.items()))
            rows = phases(h, db, timeout)
            print(f"  messages by kind: {dict(h.fleet.messages())}; Mosquitto dropped: {h.broker.dropped_messages()}")
            try:
                baselines(h, rows)
            except RuntimeError as exc:  # the figures stand without their ratio
                print(f"  broker-alone baseline not measured: {exc}")
            return rows
    finally:
        if server is not None:
            server.stop()


def table(rows: list[Row]) -> str:
    head = (
        "| N | db | phase | s | broker alone s | ratio | CP CPU s | CPU ms/device | peak RSS MB | GET p50/p99 ms "
        "| msgs/device | outcome |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        ratio = f"{r.seconds / r.broker_alone_s:.0f}x" if r.broker_alone_s else "-"
        alone = f"{r.broker_alone_s:.2f}" if r.broker_alone_s else "-"
        api = f"{r.p50_ms:.0f} / {r.p99_ms:.0f}" if r.p50_ms is not None and r.p99_ms is not None else "-"
        per_device = 1000 * r.cpu_s / r.devices
        lines.append(
            f"| {r.devices:,} | {r.database} | {r.phase} | {r.seconds:.1f} | {alone} | {ratio} | {r.cpu_s:.1f} | "
            f"{per_device:.1f} | {r.peak_rss_mb:.0f} | {api} | {r.messages_per_device:.1f} | {r.outcome} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1000,5000,10000", help="comma-separated fleet sizes")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--timeout-s", type=float, default=900, help="give up on a phase after this long")
    args = parser.parse_args()
    if not mosquitto_available():
        print("skipped: the mosquitto and mosquitto_passwd binaries are needed (apt-get install mosquitto)")
        return 0
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    rows: list[Row] = []
    for count in (int(n) for n in args.devices.split(",")):
        for db in databases:
            try:
                rows.extend(run(count, db, args.timeout_s))
            except RuntimeError as exc:
                print(f"{count} devices, {db}: not measured: {exc}")
    print("\n" + table(rows))
    print(GOALS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
