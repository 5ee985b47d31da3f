"""Drive a running control plane with N simulated devices (benchmarks/fleet_simulation), by hand.

Each device is a real MQTT 3.1.1 connection (client id and user name = its device id, password derived from
--password-seed, retained "offline" last will) running the agent's own core over simulated ports. The broker must
know the accounts: `--write-password-file FILE` writes a Mosquitto password file for them (plus the control
plane's user with --control-plane-password) and exits; point the broker's `password_file` at it, with the ACL
`pattern readwrite edge/devices/%u/#`. `--enroll` enrolls the devices through the API first (an admin token).

    .venv/bin/python benchmarks/fleet_sim.py --url http://127.0.0.1:8080 --token $TOKEN --broker-port 1883 \\
        --devices 1000 --enroll --apply-delay-s 0.05 --self-test-fail-share 0.02

Runs until interrupted (or --duration-s), printing how many devices are connected and what they sent.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fleet_simulation.broker import CONTROL_PLANE_USER, device_password, write_password_file
from benchmarks.fleet_simulation.control import enroll_fleet, signing_key
from benchmarks.fleet_simulation.fleet import FaultPlan, Fleet, FleetOptions
from benchmarks.fleet_simulation.ports import ArtifactCache
from edge_agent.protocol import Verifier


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--url", default="http://127.0.0.1:8080", help="the control plane's base URL")
    p.add_argument("--token", default=None, help="admin token (enrolling, downloading artifacts)")
    p.add_argument("--broker-host", default="127.0.0.1")
    p.add_argument("--broker-port", type=int, default=1883)
    p.add_argument("--devices", type=int, default=100, help="how many devices")
    p.add_argument("--id-prefix", default="sim-")
    p.add_argument("--label", action="append", default=[], metavar="K=V", help="device label (repeat); fleet=sim")
    p.add_argument("--password-seed", default="sim")
    p.add_argument("--write-password-file", type=Path, default=None, metavar="FILE")
    p.add_argument("--control-plane-password", default=None, help="with --write-password-file")
    p.add_argument("--enroll", action="store_true", help="enroll the devices through the API first")
    p.add_argument("--connect-concurrency", type=int, default=200, help="CONNECTs awaiting their CONNACK at once")
    p.add_argument("--connect-jitter-s", type=float, default=0.0, help="random delay before each connect")
    p.add_argument("--apply-jitter-s", type=float, default=0.0, help="random delay before each apply")
    p.add_argument("--apply-delay-s", type=float, default=0.0, help="how long a download takes")
    p.add_argument("--workers", type=int, default=8, help="apply threads shared by the fleet (CPU-bound applies)")
    p.add_argument(
        "--waiting-workers", type=int, default=128, help="apply threads for devices whose downloads take time"
    )
    p.add_argument("--telemetry-interval-s", type=float, default=0.0, help="0: no telemetry")
    p.add_argument("--latency-ms", type=float, default=5.0, help="p99 the simulated traffic reports")
    faults = p.add_argument_group("faults (shares of the fleet in [0, 1])")
    faults.add_argument("--self-test-fail-share", type=float, default=0.0)
    faults.add_argument("--cut-download-share", type=float, default=0.0)
    faults.add_argument("--slow-download-share", type=float, default=0.0)
    faults.add_argument("--slow-download-s", type=float, default=30.0)
    faults.add_argument("--disconnect-share", type=float, default=0.0, help="cut on each new desired state")
    faults.add_argument("--reconnect-s", type=float, default=2.0)
    faults.add_argument("--slow-serving-share", type=float, default=0.0)
    faults.add_argument("--slow-version", type=int, default=None, help="the version the slow share serves slowly")
    faults.add_argument("--slow-latency-ms", type=float, default=500.0)
    faults.add_argument("--seed", type=int, default=0, help="which devices the shares pick")
    p.add_argument("--duration-s", type=float, default=0.0, help="0: until interrupted")
    return p


def fault_plan(args: argparse.Namespace) -> FaultPlan:
    return FaultPlan(
        self_test_fail_share=args.self_test_fail_share,
        cut_download_share=args.cut_download_share,
        slow_download_share=args.slow_download_share,
        slow_download_s=args.slow_download_s,
        disconnect_share=args.disconnect_share,
        reconnect_s=args.reconnect_s,
        slow_serving_share=args.slow_serving_share,
        slow_version=args.slow_version,
        slow_latency_ms=args.slow_latency_ms,
        seed=args.seed,
    )


def main() -> int:
    args = parser().parse_args()
    labels = dict(item.split("=", 1) for item in args.label) or {"fleet": "sim"}
    options = FleetOptions(
        count=args.devices,
        broker_host=args.broker_host,
        broker_port=args.broker_port,
        passwords=lambda d: device_password(args.password_seed, d),
        id_prefix=args.id_prefix,
        labels=labels,
        connect_concurrency=args.connect_concurrency,
        connect_jitter_s=args.connect_jitter_s,
        apply_jitter_s=args.apply_jitter_s,
        apply_delay_s=args.apply_delay_s,
        workers=args.workers,
        waiting_workers=args.waiting_workers,
        telemetry_interval_s=args.telemetry_interval_s,
        latency_ms=args.latency_ms,
    )
    if args.write_password_file is not None:
        accounts = [(d, device_password(args.password_seed, d)) for d in options.device_ids()]
        if args.control_plane_password:
            accounts.insert(0, (CONTROL_PLANE_USER, args.control_plane_password))
        write_password_file(args.write_password_file, accounts)
        print(f"wrote {len(accounts)} accounts to {args.write_password_file}")
        return 0
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    with httpx.Client(base_url=args.url, headers=headers, timeout=60) as api:
        if args.enroll:
            start = time.monotonic()
            enroll_fleet(api, options.device_ids(), labels)
            print(f"enrolled {args.devices} devices in {time.monotonic() - start:.1f} s")
        cache = ArtifactCache(Path(f"/tmp/fleet-sim-{time.time_ns()}"), args.token)
        fleet = Fleet(options, Verifier(signing_key(api)), cache, fault_plan(args))
    fleet.start()
    start = time.monotonic()
    try:
        while not args.duration_s or time.monotonic() - start < args.duration_s:
            time.sleep(5)
            sent = dict(fleet.messages())
            print(f"{time.monotonic() - start:7.1f} s  connected {fleet.connected_count()}/{args.devices}  {sent}")
    except KeyboardInterrupt:
        pass
    finally:
        fleet.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
