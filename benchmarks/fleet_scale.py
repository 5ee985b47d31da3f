"""Fleet-scale benchmark: N simulated devices (benchmarks/fleet_simulation: real MQTT connections, each running the
agent's own core) against a real Mosquitto and an `edgectl server` process with default settings.

Phases, for each N and database: all devices online in the API (from the first connect); an all-at-once rollout
POST -> `succeeded`; a rollout with a long bake to every device, then an operator abort -> `rolled_back`; canary +
2 waves -> `succeeded`; a latency gate (max_p99_ms) tripping on a slow-serving share -> `rolled_back`. For each:
seconds, control-plane CPU-seconds (and per device), peak RSS, `GET /v1/rollouts/{id}` p50/p99 from a 5/s poller,
messages per device (sent by the devices + desired states they received), and the ratio to the broker alone
moving the same number of messages (a bare paho publisher and subscriber, measured in the same run).

Last, the reconnect storm (benchmarks/fleet_simulation/storm.py): the fleet on one version, an all-at-once rollout
to the next, Mosquitto restarted as soon as the first devices report it; a row each for: every device reconnected
(from the SIGTERM), the rollout's POST -> `succeeded` across the restart, `/healthz` asked every 100 ms throughout
(p50/p99 in the API column, max and failures in the outcome), and every device's last report stored (none lost).

    .venv/bin/python benchmarks/fleet_scale.py [--devices 1000,5000,10000] [--database sqlite|postgresql|both]
        [--storm-devices N] [--storm-only] [--sim-processes K]

`--storm-devices N` runs the storm once per database on a fleet of N of its own (0: no storm) instead of at the end
of each run; `--storm-only` leaves out the other phases (e.g. `--devices 5000 --storm-only`). `--sim-processes K`
(default 2) simulates the fleet of the phases in K processes (benchmarks/fleet_simulation/shards.py), so that the
simulator's own GIL does not set the pace; the storm then gets a one-process fleet of its own after them.

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

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleet_simulation.broker import CONTROL_PLANE_USER
from benchmarks.fleet_simulation.control import list_devices, online, phase, rollout
from benchmarks.fleet_simulation.fleet import FaultPlan
from benchmarks.fleet_simulation.harness import MODEL, Harness, deployment
from benchmarks.fleet_simulation.measure import PhaseProbe, broker_alone
from benchmarks.fleet_simulation.storm import StormResult, run_storm
from edge_agent.config import AgentConfig
from tests.support import mosquitto_available, password_for

GOALS = "goals (2 cores, 10k): POST->succeeded <= 30 s; abort->rolled_back <= 10 s (1k: <= 2 s); <= 1 ms CPU/device"
FINAL = ("succeeded", "aborted", "rolled_back")
PAYLOAD_BYTES = 700  # about a sealed event or reported state
AGENT_TELEMETRY_S: float = AgentConfig.model_fields["telemetry_interval_s"].default  # an agent's default interval


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
    others_cpu_s: dict[str, float] | None = None  # the simulator's and the broker's CPU-seconds over the phase


def probe(h: Harness, rollout_id: str | None = None) -> PhaseProbe:
    """The control plane's probe for a phase (polling the rollout when given), with the simulator's own and the
    broker's CPU alongside: on these 2 cores they share the machine with the control plane."""
    also = {f"sim{i}": pid for i, pid in enumerate(h.fleet_pids())} | {"broker": h.broker.process.pid}  # type: ignore[union-attr]
    url = f"/v1/rollouts/{rollout_id}" if rollout_id else None
    return PhaseProbe(h.control_plane.process.pid, h.api if url else None, url, also=also)  # type: ignore[union-attr]


def fleet_messages(h: Harness) -> int:
    return sum(h.fleet.messages().values())


def run_rollout(h: Harness, name: str, body: dict[str, Any], final: str, timeout: float, db: str) -> Row:
    """POST `body`, wait for a final phase; measured from the POST."""
    n = len(h.ids)
    before = fleet_messages(h)
    start = time.monotonic()
    rollout_id = rollout(h.api, body)
    with probe(h, rollout_id) as usage:
        h.wait(lambda: phase(h.api, rollout_id) in FINAL, timeout, f"{name} to finish", every=0.2)
        seconds = time.monotonic() - start
    print(f"  {name}: {seconds:.1f} s; {h.fleet.timeline(start)}")
    outcome = phase(h.api, rollout_id)
    p50, p99 = usage.p50_p99()
    sent = (fleet_messages(h) - before) / n
    outcome = f"{outcome} (want {final})"
    return Row(n, db, name, seconds, usage.cpu_s, usage.peak_rss_mb, p50, p99, sent, outcome, None, usage.also_cpu_s)


def run_abort(h: Harness, version: int, timeout: float, db: str) -> Row:
    """Every device moved to `version` with a long bake, then an operator abort: abort -> `rolled_back`."""
    n = len(h.ids)
    rollout_id = rollout(h.api, everyone(version) | {"bake_s": 3600})
    h.wait(lambda: activated(h, rollout_id) == n, timeout, "every device activated before the abort", every=0.5)
    h.wait(h.fleet.idle, timeout, "the simulator idle")
    before = fleet_messages(h)
    with probe(h, rollout_id) as usage:
        start = time.monotonic()
        answer = h.api.post(f"/v1/rollouts/{rollout_id}/abort", timeout=120)  # it decides for the whole fleet
        if answer.status_code >= 300:
            raise RuntimeError(f"abort refused: {answer.status_code} {answer.text}")
        h.wait(lambda: phase(h.api, rollout_id) in FINAL, timeout, "the abort to finish", every=0.2)
        seconds = time.monotonic() - start
    print(f"  abort: {seconds:.1f} s; {h.fleet.timeline(start)}")
    p50, p99 = usage.p50_p99()
    sent = (fleet_messages(h) - before) / n
    outcome = phase(h.api, rollout_id)
    row = Row(n, db, "abort -> rolled_back", seconds, usage.cpu_s, usage.peak_rss_mb, p50, p99, sent, outcome)
    row.others_cpu_s = usage.also_cpu_s
    return row


def activated(h: Harness, rollout_id: str) -> int:
    answer = h.api.get(f"/v1/rollouts/{rollout_id}", params={"limit": 1}, timeout=120)  # the counts, not a page
    counts: dict[str, int] = answer.json().get("counts") or {}
    return counts.get("activated", 0)


def everyone(version: int) -> dict[str, Any]:
    return {"model": MODEL, "version": version, "selector": {"labels": {"fleet": "sim"}}}


def run_online(h: Harness, timeout: float, db: str) -> Row:
    ids = h.ids
    with probe(h) as usage:
        h.wait(lambda: online(list_devices(h.api), ids) == len(ids), timeout, "every device online", every=0.5)
    seconds = time.monotonic() - h.fleet_started_at
    n = len(ids)
    row = Row(n, db, "all online in API", seconds, usage.cpu_s, usage.peak_rss_mb, None, None, 2.0, "online")
    row.others_cpu_s = usage.also_cpu_s
    return row


def phases(h: Harness, db: str, timeout: float, telemetry_s: float = AGENT_TELEMETRY_S) -> list[Row]:
    """Every phase in order; a phase that does not finish in `timeout` ends the run with a row that says so (the
    phases before it keep their figures)."""
    v1, v2, v3, v4 = h.versions
    strategy = {"type": "canary", "canary": {"percent": 5}, "waves": [{"percent": 45}, {"percent": 50}]}
    canary = everyone(v3) | {"strategy": strategy, "max_unavailable": {"percent": 100}}
    gate = {"min_requests": 20, "max_p99_ms": 100, "on_fail": "abort"}

    def latency_gate() -> Row:
        h.fleet.faults = FaultPlan(slow_serving_share=0.1, slow_version=v4, slow_latency_ms=500)
        h.fleet.telemetry_interval_s = telemetry_s
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
        except (RuntimeError, httpx.HTTPError) as exc:  # a timed-out API call is a phase that did not finish
            rows.append(Row(len(h.ids), db, name, timeout, 0.0, 0.0, None, None, 0.0, f"did not finish: {exc!r}"))
            break
    return rows


def storm_rows(r: StormResult, db: str) -> list[Row]:
    """A row per measure of the reconnect storm."""
    n, health = r.devices, r.health
    link = f"{r.link_back_s:.1f} s" if r.link_back_s is not None else "never seen down"
    spent = health.answers[-1].at - health.answers[0].at if health.answers else 0.0
    over = sum(1 for a in health.answers if a.latency_ms > 1000)
    lost = f"{len(r.lost)} lost" + (f" ({', '.join(r.lost[:5])}...)" if r.lost else "")
    reconnected = f"broker down {r.broker_down_s:.1f} s; control plane link back after {link}"
    converged = f"{r.outcome}; restarted when {r.reported_b_at_restart} reported B; {r.serving_b}/{n} serve B"
    answered = f"max {health.max_ms:.0f} ms; {over} over 1 s; {health.failures} failed of {len(health.answers)}"
    p50, p99 = health.percentile_ms(50), health.percentile_ms(99)
    return [
        Row(n, db, "storm: restart -> every device reconnected", r.reconnected_s, 0, 0, None, None, 0, reconnected),
        Row(
            n,
            db,
            "storm: POST -> succeeded, broker restarted mid-rollout",
            r.rollout_s,
            r.cpu_s,
            r.peak_rss_mb,
            None,
            None,
            r.messages_per_device,
            converged,
        ),
        Row(n, db, "storm: /healthz every 100 ms", spent, 0, 0, p50, p99, 0, answered),
        Row(
            n,
            db,
            "storm: succeeded -> every last report stored",
            r.settled_s or 0.0,
            0,
            0,
            None,
            None,
            0,
            lost if r.settled_s is not None else f"not settled: {lost}",
        ),
    ]


def storm_phase(h: Harness, db: str, timeout: float) -> list[Row]:
    version_a, version_b = h.versions[:2]
    try:
        return storm_rows(run_storm(h, version_a, version_b, timeout), db)
    except (RuntimeError, httpx.HTTPError) as exc:
        return [Row(len(h.ids), db, "storm", timeout, 0.0, 0.0, None, None, 0.0, f"did not finish: {exc!r}")]


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


def run(
    count: int,
    db: str,
    timeout: float,
    regular: bool = True,
    storm: bool = True,
    processes: int = 1,
    telemetry_s: float = AGENT_TELEMETRY_S,
) -> list[Row]:
    """The phases (`regular`), then the reconnect storm (`storm`) unless a phase did not finish; the fleet simulated
    by `processes` processes (the storm reaches into single devices: one process)."""
    env, server = database_env(db)
    versions = 4 if regular else 2
    options = {"apply_jitter_s": 0.2}
    try:
        with deployment(count, versions, options, control_plane_env=env, processes=processes) as h:
            print(f"\n{count} devices, {db}: setup " + ", ".join(f"{k} {v:.1f} s" for k, v in h.setup_s.items()))
            rows = phases(h, db, timeout, telemetry_s) if regular else []
            if storm and not any(r.outcome.startswith("did not finish") for r in rows):
                rows.extend(storm_phase(h, db, timeout))
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
        "| sim / broker CPU s | msgs/device | outcome |"
    )
    lines = [head, "|" + "---|" * 13]
    for r in rows:
        ratio = f"{r.seconds / r.broker_alone_s:.0f}x" if r.broker_alone_s else "-"
        alone = f"{r.broker_alone_s:.2f}" if r.broker_alone_s else "-"
        api = f"{r.p50_ms:.0f} / {r.p99_ms:.0f}" if r.p50_ms is not None and r.p99_ms is not None else "-"
        per_device = 1000 * r.cpu_s / r.devices
        others = r.others_cpu_s or {}
        sim = sum(v for k, v in others.items() if k.startswith("sim"))
        sim_broker = f"{sim:.1f} / {others['broker']:.1f}" if others else "-"
        lines.append(
            f"| {r.devices:,} | {r.database} | {r.phase} | {r.seconds:.1f} | {alone} | {ratio} | {r.cpu_s:.1f} | "
            f"{per_device:.1f} | {r.peak_rss_mb:.0f} | {api} | {sim_broker} | {r.messages_per_device:.1f} | "
            f"{r.outcome} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", default="1000,5000,10000", help="comma-separated fleet sizes")
    parser.add_argument("--database", choices=("sqlite", "postgresql", "both"), default="sqlite")
    parser.add_argument("--timeout-s", type=float, default=900, help="give up on a phase after this long")
    parser.add_argument(
        "--storm-devices",
        type=int,
        default=None,
        help="run the reconnect storm on a fleet of this many of its own (0: none; default: at the end of each run)",
    )
    parser.add_argument(
        "--telemetry-interval-s",
        type=float,
        default=AGENT_TELEMETRY_S,
        help=f"seconds between each device's telemetry in the latency-gate phase (default {AGENT_TELEMETRY_S:g}: the "
        "agent's default; runs before 2026-12-02 used 2)",
    )
    parser.add_argument("--storm-only", action="store_true", help="only the reconnect storm, no other phase")
    parser.add_argument(
        "--sim-processes",
        type=int,
        default=2,
        help="processes simulating the fleet in the phases (one process's GIL would be the bottleneck; the storm "
        "always runs on one)",
    )
    args = parser.parse_args()
    if not mosquitto_available():
        print("skipped: the mosquitto and mosquitto_passwd binaries are needed (apt-get install mosquitto)")
        return 0
    databases = ["sqlite", "postgresql"] if args.database == "both" else [args.database]
    # (fleet size, with the other phases, with the storm at its end)
    runs = [(int(n), not args.storm_only, args.storm_devices is None) for n in args.devices.split(",") if n]
    if args.storm_devices is not None:
        runs = [run for run in runs if run[1]] + ([(args.storm_devices, False, True)] if args.storm_devices else [])
    if args.sim_processes > 1:  # the storm on a one-process fleet of its own, after the phases
        runs = [r for n, regular, storm in runs for r in [(n, regular, False), (n, False, storm)] if r[1] or r[2]]
    rows: list[Row] = []
    for count, regular, storm in runs:
        for db in databases:
            try:
                processes = args.sim_processes if regular else 1
                rows.extend(run(count, db, args.timeout_s, regular, storm, processes, args.telemetry_interval_s))
            except RuntimeError as exc:
                print(f"{count} devices, {db}: not measured: {exc}")
    print("\n" + table(rows))
    print(GOALS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
