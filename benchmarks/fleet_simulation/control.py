"""What the simulator asks of the control plane's REST API: its signing key, enrolling the simulated devices (an
operator's `PUT /v1/devices/{id}/enrollment`, the same facts the devices then report), and reading the fleet back.

Reading the fleet follows `GET /v1/devices`' pages (decision 0013).
Must never reach into the control plane's database or modules: only its public API.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from benchmarks.fleet_simulation.device import SIM_HARDWARE
from edge_agent.protocol import ReportedState


def signing_key(api: httpx.Client) -> str:
    """The control plane's public signing key, as the agents pin it at enrollment."""
    answer = api.get("/v1/keys/signing")
    answer.raise_for_status()
    return str(answer.json()["public_key"])


def enroll_fleet(api: httpx.Client, device_ids: Iterable[str], labels: dict[str, str], threads: int = 4) -> int:
    """Enroll every device as an operator would (idempotent); returns how many were enrolled."""
    hardware = SIM_HARDWARE.model_dump(mode="json")
    body = {"channel": "mqtt", "labels": labels, "gpu_class": SIM_HARDWARE.gpu_class, "hardware": hardware}

    def enroll(device_id: str) -> None:
        answer = api.put(f"/v1/devices/{device_id}/enrollment", json=body)
        if answer.status_code != 200:
            raise RuntimeError(f"enrolling {device_id}: {answer.status_code} {answer.text}")

    ids = list(device_ids)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        list(pool.map(enroll, ids))
    return len(ids)


def list_devices(api: httpx.Client, selector: str | None = None) -> list[dict[str, Any]]:
    """Every device the control plane knows, following the `Link: <...>; rel="next"` pages (on this client's server:
    only the link's query is taken)."""
    params: dict[str, Any] = {"selector": selector} if selector else {}
    found: list[dict[str, Any]] = []
    while True:
        answer = api.get("/v1/devices", params=params, timeout=120)
        answer.raise_for_status()
        found.extend(answer.json())
        following = answer.links.get("next")
        if following is None:
            return found
        params = dict(httpx.URL(following["url"]).params.multi_items())


def online(devices: Iterable[dict[str, Any]], ids: set[str]) -> int:
    """How many of `ids` the API shows online with a report."""
    return sum(1 for d in devices if d["id"] in ids and d.get("presence") == "online" and d.get("reported"))


def lost_reports(devices: Iterable[dict[str, Any]], last_sent: dict[str, ReportedState | None]) -> list[str]:
    """Devices whose stored report is not the last one the simulator published (a lost or stale report)."""
    stored = {d["id"]: d.get("reported") for d in devices}
    lost = []
    for device_id, sent in last_sent.items():
        kept = stored.get(device_id)
        if sent is None:
            continue
        if kept is None or ReportedState.model_validate(kept) != sent:
            lost.append(device_id)
    return sorted(lost)


def rollout(api: httpx.Client, body: dict[str, Any]) -> str:
    answer = api.post("/v1/rollouts", json=body, timeout=120)  # creating one for 10,000 devices takes seconds
    if answer.status_code != 201:
        raise RuntimeError(f"rollout refused: {answer.status_code} {answer.text}")
    return str(answer.json()["id"])


def phase(api: httpx.Client, rollout_id: str) -> str:
    """The rollout's phase, asking for one device of it: the benchmark's waits poll this 5 times a second and must
    not load what they measure (the probe's GET asks for a default page, as an operator's `rollout get` does)."""
    answer = api.get(f"/v1/rollouts/{rollout_id}", params={"limit": 1}, timeout=120)
    answer.raise_for_status()
    return str(answer.json()["phase"])
