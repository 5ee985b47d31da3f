"""What a device's tunnel costs: latency and throughput through it against the same thing direct on loopback, and the
gateway's memory per idle connected device. Issue 12, item 7.

Everything runs for real on this machine, in one run: `edgectl server` (enrollment, and the operators' proxy route
when the tree has one; its MQTT link is left unconnected: tunnels do not use MQTT), `edgectl tunnel-gateway` on the
same data dir, and devices enrolled through `POST /v1/enroll` with their own ed25519 keys (the agent's enrollment
client). Their tunnels are the agent's own `TunnelLink` (asyncssh), in processes of their own:
  - the edge device: the agent's inference app (KServe v2, a small MLP on onnxruntime, uvicorn on loopback) and a
    bulk TCP service, both exposed through one `TunnelLink`, in one process as in the agent;
  - the idle fleet: N more devices, one `TunnelLink` each (the link runs its own thread and event loop), exposing
    one service each (`kserve`, never connected to), in one process, so that the gateway's RSS is its own.

1. KServe v2 inference (`POST /v2/models/mlp/infer`, batch 1, JSON): p50/p90/p99 direct to the app's port, through
   the gateway's unix socket for the device's `kserve` service (httpx over the socket), and through the control
   plane's `/v1/devices/{id}/services/kserve/...` when the server has that route. Each with a kept-alive connection
   and with a new connection per request (a new SSH channel through the tunnel). Each path is measured beside its
   own direct baseline, the two called in turn within every round, so drifting load slows them alike (and the
   proxy's work after each answer does not land on the tunnel's figures).
2. A transfer of `--transfer-mb` MB (10^6 bytes, pseudo-random: nothing compresses) each way, from and to the bulk
   service, direct (loopback TCP) and through the tunnel (the gateway's socket); every byte is checked. With the
   CPU seconds the gateway and the device's process spent on it.
3. The gateway's memory per idle connected device: its RSS (and open files) before the idle fleet connects and after
   every device's socket exists (medians of samples taken once a second over `--idle-s`), per device; the time for
   all N to connect at once, the gateway's CPU while they connect and while they idle, and its RSS once all left.

Run: .venv/bin/python benchmarks/tunnel_overhead.py [--calls 1000] [--fresh-calls 300] [--transfer-mb 100]
     [--transfer-runs 3] [--devices 1000] [--idle-s 15]
About 3 minutes on 2 cores by default; needs no broker and no root. Not a timed test: figures vary with the
machine; quote medians and ratios (tests/integration/cli/test_tunnel_overhead_smoke.py runs it at a tiny size).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleet_simulation.measure import cpu_seconds, percentile, rss_mb
from benchmarks.serving_overhead import JSON_HEADERS, json_body, mlp_model
from benchmarks.tunnel_rig.cloud import Cloud, cloud, enroll
from benchmarks.tunnel_rig.edge import (
    EDGE,
    MAX_TRANSFER,
    child,
    edge_main,
    fleet_main,
    read_line,
    receive_pattern,
    send_pattern,
)
from control_plane.domain.tunnels import service_socket
from tests.support import ADMIN_HEADERS, wait_for

INFER = "/v2/models/mlp/infer"
MB = 1_000_000


# -- 1. inference latency ---------------------------------------------------------------------------------------------
class Latency(NamedTuple):
    connection: str  # kept-alive, or a new connection per request
    path: str  # direct, tunnel, proxy
    calls: int
    p50_us: float
    p90_us: float
    p99_us: float


def latencies_us(clients: dict[str, httpx.Client], body: bytes, calls: int, warmup: int) -> dict[str, list[float]]:
    """Each client's POST of `body`, every client in turn within each round (as serving_overhead.p50s_us)."""
    for client in clients.values():
        for _ in range(warmup):
            client.post(INFER, content=body, headers=JSON_HEADERS).raise_for_status()
    times: dict[str, list[float]] = {name: [] for name in clients}
    for _ in range(calls):
        for name, client in clients.items():
            start = time.perf_counter()
            client.post(INFER, content=body, headers=JSON_HEADERS).raise_for_status()
            times[name].append((time.perf_counter() - start) * 1e6)
    return times


def proxy_route(cloud: Cloud) -> str | None:
    """The control plane's path onto a device's service, when the server has one (issue 12, item 3)."""
    paths = httpx.get(f"{cloud.url}/openapi.json", timeout=30).json().get("paths", {})
    if not any(p.startswith("/v1/devices/{") and "/services/{" in p for p in paths):
        return None
    return f"{cloud.url}/v1/devices/{EDGE}/services/kserve"


def clients_for(cloud: Cloud, direct_url: str, proxy: str | None, keepalive: int | None) -> dict[str, httpx.Client]:
    limits = httpx.Limits(max_keepalive_connections=keepalive)
    uds = httpx.HTTPTransport(uds=str(service_socket(cloud.run_dir, EDGE, "kserve")), limits=limits)
    clients = {
        "direct": httpx.Client(base_url=direct_url, limits=limits, timeout=30),
        "tunnel": httpx.Client(base_url="http://device", transport=uds, timeout=30),
    }
    if proxy is not None:
        clients["proxy"] = httpx.Client(base_url=proxy, limits=limits, headers=ADMIN_HEADERS, timeout=30)
    return clients


def unlike_direct(clients: dict[str, httpx.Client], body: bytes) -> dict[str, str]:
    """The paths whose answer is not the direct one's (status and the start of the body), checked once."""
    answers = {name: client.post(INFER, content=body, headers=JSON_HEADERS) for name, client in clients.items()}
    expected = answers["direct"].raise_for_status().json()["outputs"]
    return {
        name: f"{answer.status_code} {answer.text[:200]}"
        for name, answer in answers.items()
        if answer.status_code != 200 or answer.json().get("outputs") != expected
    }


def inference(cloud: Cloud, direct_url: str, calls: int, fresh_calls: int) -> tuple[list[Latency], str | None]:
    """The rows, and why the proxy has none (None: it has)."""
    body = json_body(np.random.default_rng(1).standard_normal((1, 8)).astype(np.float32))
    proxy = proxy_route(cloud)
    not_measured = None if proxy else "route absent"
    rows: list[Latency] = []
    for mode, count, keepalive in (("kept-alive", calls, None), ("new connection", fresh_calls, 0)):
        clients = clients_for(cloud, direct_url, proxy, keepalive)
        try:
            wrong = unlike_direct(clients, body)
            if "tunnel" in wrong:
                raise RuntimeError(f"through the tunnel, not the direct answer: {wrong['tunnel']}")
            if "proxy" in wrong:
                not_measured = f"answered {wrong['proxy']}"
                clients.pop("proxy").close()
            for path in [p for p in ("tunnel", "proxy") if p in clients and count]:
                # each path beside its own direct baseline: the proxy's bookkeeping after an answer (its session
                # is finished in the background) must not land on the tunnel's figures, nor the other way round
                times = latencies_us({"direct": clients["direct"], path: clients[path]}, body, count, warmup=20)
                rows += [Latency(mode, name, count, *_percentiles(t)) for name, t in times.items()]
        finally:
            for client in clients.values():
                client.close()
    return rows, not_measured


def _percentiles(values: list[float]) -> tuple[float, float, float]:
    p50, p90, p99 = (percentile(values, q) for q in (50, 90, 99))
    assert p50 is not None and p90 is not None and p99 is not None
    return p50, p90, p99


# -- 2. a transfer each way -------------------------------------------------------------------------------------------
class Transfer(NamedTuple):
    direction: str
    path: str  # direct, tunnel
    mb_s: list[float]  # one per run
    gateway_cpu_s: float  # over all runs
    device_cpu_s: float  # the edge device's process (the bulk service and, through the tunnel, its link)


def transfer_mb_s(connect: Callable[[], socket.socket], verb: str, n: int) -> float:
    """MB/s of one `get` (n bytes from the device) or `put` (n bytes to it), from connect to the last byte/answer."""
    start = time.perf_counter()
    with connect() as sock:
        sock.sendall(b"%s %d\n" % (verb.encode(), n))
        sock.settimeout(120)
        if verb == "get":
            intact = receive_pattern(sock, n)
        else:
            send_pattern(sock, n)
            intact = read_line(sock, 64) == b"ok %d" % n
    elapsed = time.perf_counter() - start
    if not intact:
        raise RuntimeError(f"{verb} of {n:,} bytes: the bytes that arrived are not the ones sent")
    return n / elapsed / MB


def unix(path: Path) -> Callable[[], socket.socket]:
    def connect() -> socket.socket:
        sock = socket.socket(socket.AF_UNIX)
        sock.connect(str(path))
        return sock

    return connect


def transfers(cloud: Cloud, edge_pid: int, bulk_port: int, size_mb: float, runs: int) -> list[Transfer]:
    """Each direction, each path in turn within every run; with the CPU the gateway and the device spent on it."""
    n, pids = int(size_mb * MB), (cloud.gateway.pid, edge_pid)
    paths = {
        "direct": lambda: socket.create_connection(("127.0.0.1", bulk_port)),
        "tunnel": unix(service_socket(cloud.run_dir, EDGE, "bulk")),
    }
    rows = []
    for verb, direction in (("get", "device -> cloud"), ("put", "cloud -> device")):
        rates: dict[str, list[float]] = {path: [] for path in paths}
        cpu = {path: [0.0, 0.0] for path in paths}
        for _ in range(runs):
            for path, connect in paths.items():
                before = [cpu_seconds(pid) for pid in pids]
                rates[path].append(transfer_mb_s(connect, verb, n))
                cpu[path] = [
                    total + cpu_seconds(pid) - was for total, pid, was in zip(cpu[path], pids, before, strict=True)
                ]
        rows += [Transfer(direction, path, rates[path], *cpu[path]) for path in paths]
    return rows


# -- 3. memory per idle connected device ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sample:
    rss_mb: float  # median of the samples
    cpu_pct: float  # of one core, over the samples' span
    open_files: int


@dataclass(frozen=True)
class IdleFleet:
    devices: int
    before: Sample  # the gateway with the edge device only
    connected: Sample  # ... and the idle fleet, all connected
    after: Sample  # once the idle fleet left
    reached_s: dict[int, float]  # share of the fleet connected (%) -> seconds after they all started
    gateway_cpu_s: float  # while they connected
    fleet_cpu_s: float  # the devices' own process, meanwhile
    links: tuple[int, int, list[str]]  # the links' own view: connected, reconnects, distinct last errors
    still_exposed: int  # sockets of the fleet at the end of the samples


def sample(pid: int, seconds: float, every: float = 1.0) -> Sample:
    cpu0, start, rss = cpu_seconds(pid), time.monotonic(), [rss_mb(pid)]
    while time.monotonic() - start < seconds:
        time.sleep(every)
        rss.append(rss_mb(pid))
    cpu_pct = 100 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - start)
    return Sample(statistics.median(rss), cpu_pct, sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir()))


def exposed(cloud: Cloud, device_ids: list[str]) -> int:
    return sum(service_socket(cloud.run_dir, d, "kserve").exists() for d in device_ids)


def connecting(cloud: Cloud, pipe: Connection, ids: list[str], timeout_s: float) -> dict[int, float]:
    """Start every link at once; when 50%, 90% and all of them had their socket at the gateway."""
    start, reached = time.monotonic(), dict[int, float]()
    pipe.send("go")
    while len(reached) < 3:
        count = exposed(cloud, ids)
        reached |= {
            q: time.monotonic() - start for q in (50, 90, 100) if q not in reached and count * 100 >= q * len(ids)
        }
        if time.monotonic() - start > timeout_s:
            pipe.send("health")
            raise RuntimeError(f"{count} of {len(ids)} devices connected after {timeout_s:g} s; links: {pipe.recv()}")
        time.sleep(0.05)
    return reached


def idle_fleet(cloud: Cloud, keys: dict[str, Path], idle_s: float, timeout_s: float) -> IdleFleet:
    pid, ids = cloud.gateway.pid, list(keys)
    before = sample(pid, 3.0, 0.5)
    with child(fleet_main, cloud.gateway_port, cloud.host_key, {d: str(k) for d, k in keys.items()}) as (pipe, fleet):
        if not pipe.poll(120):
            raise RuntimeError("the idle fleet's process did not set up its links within 120 s")
        pipe.recv()
        cpu0, fleet_cpu0 = cpu_seconds(pid), cpu_seconds(fleet)
        reached = connecting(cloud, pipe, ids, timeout_s)
        gateway_cpu, fleet_cpu = cpu_seconds(pid) - cpu0, cpu_seconds(fleet) - fleet_cpu0
        connected = sample(pid, idle_s)
        pipe.send("health")
        links, still = pipe.recv(), exposed(cloud, ids)
    wait_for(lambda: exposed(cloud, ids) == 0, timeout=120, what="every idle device's socket to go")
    after = sample(pid, 3.0, 0.5)
    return IdleFleet(len(ids), before, connected, after, reached, gateway_cpu, fleet_cpu, links, still)


# -- the run ----------------------------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1000, help="inference calls per path, kept-alive (0: skip)")
    parser.add_argument(
        "--fresh-calls", type=int, default=300, help="inference calls per path, new connection each (0: skip)"
    )
    parser.add_argument("--transfer-mb", type=float, default=100, help="MB (10^6 bytes) per transfer (0: skip)")
    parser.add_argument("--transfer-runs", type=int, default=3, help="transfers per path and direction (median)")
    parser.add_argument("--devices", type=int, default=1000, help="idle connected devices (0: skip)")
    parser.add_argument("--idle-s", type=float, default=15, help="seconds of samples with the idle fleet connected")
    parser.add_argument("--connect-timeout-s", type=float, default=600, help="give up on the idle fleet after this")
    args = parser.parse_args()
    if not 0 <= args.transfer_mb * MB <= MAX_TRANSFER or not 0 <= args.devices <= 100_000:
        parser.error("--transfer-mb: 0 to 4294; --devices: 0 to 100000")
    if min(args.calls, args.fresh_calls) < 0 or args.transfer_runs < 1 or args.idle_s < 0:
        parser.error("--calls and --fresh-calls: 0 or more; --transfer-runs: 1 or more; --idle-s: 0 or more")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the processes started here on the way out

    print(f"load average at start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs", flush=True)
    with tempfile.TemporaryDirectory(prefix="tb-", dir="/tmp") as tmp, cloud(Path(tmp)) as cp:
        root = Path(tmp)
        fleet = [f"idle-{i:05d}" for i in range(args.devices)]
        start = time.monotonic()
        keys = enroll(cp, [EDGE, *fleet], root / "keys")
        print(f"enrolled {len(keys)} devices through POST /v1/enroll in {time.monotonic() - start:.1f} s", flush=True)
        mlp_model(root / "mlp.onnx")
        model = str(root / "mlp.onnx")
        with child(edge_main, cp.gateway_port, cp.host_key, str(keys[EDGE]), model) as (edge, edge_pid):
            if not edge.poll(120):
                raise RuntimeError("the edge device's process did not start its services within 120 s")
            direct_url, bulk_port = edge.recv()
            sockets = [service_socket(cp.run_dir, EDGE, service) for service in ("kserve", "bulk")]
            wait_for(lambda: all(path.exists() for path in sockets), 60, f"{EDGE}'s services at the gateway")
            inference(cp, direct_url, 0, 0)  # one answer on every path: checked, and the gateway warmed
            idle = idle_fleet(cp, {d: keys[d] for d in fleet}, args.idle_s, args.connect_timeout_s) if fleet else None
            latency, proxy = inference(cp, direct_url, args.calls, args.fresh_calls)
            moved = transfers(cp, edge_pid, bulk_port, args.transfer_mb, args.transfer_runs) if args.transfer_mb else []
    report(latency, proxy, moved, idle, args)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}; a shared machine's figures vary from run to run")


def report(latency: list[Latency], proxy: str | None, moved: list[Transfer], idle: IdleFleet | None, args: Any) -> None:
    if latency:
        report_latency(latency, proxy)
    if moved:
        report_transfers(moved, args.transfer_mb, args.transfer_runs)
    if idle is not None:
        report_idle(idle)


def report_latency(latency: list[Latency], proxy: str | None) -> None:
    print("\n1. KServe v2 inference, MLP 8-64-64-3, batch 1, JSON; microseconds")
    print(f"{'connection':<15} {'path':<7} {'calls':>6} {'p50':>8} {'p90':>8} {'p99':>8} {'p50 / direct':>13}")
    direct = 0.0
    for mode, name, calls, p50, p90, p99 in latency:
        direct = p50 if name == "direct" else direct  # every path's row follows its own baseline's
        print(f"{mode:<15} {name:<7} {calls:>6} {p50:>8.0f} {p90:>8.0f} {p99:>8.0f} {p50 / direct:>13.2f}")
    quiet = {row.connection: row.p50_us for row in reversed(latency) if row.path == "direct"}  # each mode's first
    beside = [f"{row.p50_us / quiet[row.connection]:.2f} ({row.connection})" for row in latency if row.path == "proxy"]
    if beside:
        print(f"proxy p50 / the direct p50 beside the tunnel (no proxy work in between): {', '.join(beside)}")
    if proxy is not None:
        print(f"proxy (the control plane's /v1/devices/{{id}}/services/kserve/...): not measured: {proxy}")


def report_transfers(moved: list[Transfer], size_mb: float, runs: int) -> None:
    print(f"\n2. Transfers of {size_mb:g} MB (1 MB = 10^6 bytes); MB/s, median of {runs}; CPU seconds per 100 MB")
    print(
        f"{'direction':<16} {'path':<7} {'MB/s':>6} {'/ direct':>9} {'gateway CPU':>12} {'device CPU':>11}   each run"
    )
    direct = {row.direction: statistics.median(row.mb_s) for row in moved if row.path == "direct"}
    for row in moved:
        rate, per_100mb = statistics.median(row.mb_s), 100 / (size_mb * runs)
        print(
            f"{row.direction:<16} {row.path:<7} {rate:>6.0f} {rate / direct[row.direction]:>9.3f} "
            f"{row.gateway_cpu_s * per_100mb:>12.2f} {row.device_cpu_s * per_100mb:>11.2f}   "
            + " ".join(f"{r:.0f}" for r in row.mb_s)
        )


def report_idle(idle: IdleFleet) -> None:
    n, reached = idle.devices, idle.reached_s
    connected, reconnects, errors = idle.links
    print(f"\n3. The gateway with {n} idle connected devices (one exposed service each)")
    print(
        f"all started at once: 50% connected in {reached[50]:.1f} s, 90% in {reached[90]:.1f} s, all in "
        f"{reached[100]:.1f} s; CPU meanwhile: gateway {idle.gateway_cpu_s:.1f} s, the devices' process "
        f"{idle.fleet_cpu_s:.1f} s; link reconnects {reconnects}" + (f"; {errors}" if errors else "")
    )
    print(f"{'gateway':<28} {'RSS MB':>8} {'open files':>11} {'CPU % of a core':>16}")
    rows = (
        ("with the edge device only", idle.before),
        (f"+ {n} idle", idle.connected),
        ("after they left", idle.after),
    )
    for label, s in rows:
        print(f"{label:<28} {s.rss_mb:>8.1f} {s.open_files:>11} {s.cpu_pct:>16.1f}")
    per_kib = (idle.connected.rss_mb - idle.before.rss_mb) * 1024 / n
    per_files = (idle.connected.open_files - idle.before.open_files) / n
    print(
        f"per idle device: {per_kib:.1f} KiB of gateway RSS, {per_files:.2f} open files ({connected} of {n} links "
        f"connected and {idle.still_exposed} sockets at the end of the samples)"
    )


if __name__ == "__main__":
    main()
