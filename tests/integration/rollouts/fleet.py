"""Real parts for the rollout fault tests and the rollback benchmark.

- `ControlPlaneProcess`: `edgectl server` as a subprocess on a data dir, killable with SIGKILL and restartable on
  the same data dir and port (what `kill -9` and a supervisor restart do to a production control plane);
- `start_agents`: real `edge-agent run` processes (dev-1..dev-N) on a private broker, own data dirs and ports, each
  enrolled first with `edge-agent enroll` and an auto-approving enrollment token that presets its labels;
- `LoadGenerator`: a bounded number of KServe v2 requests from a few threads, recording every answer's version
  and every failure;
- `CuttableProxy`: a loopback TCP proxy, throttled, that can drop every connection it carries and refuse new ones
  for a while (a device's link to the artifact server cut in the middle of a download), then heal.

Every process here is ended by its own PID; nothing is found by name.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import yaml

from tests.integration.agent.harness import AgentProcess
from tests.integration.rollouts.models import FEATURES
from tests.support import DynsecMosquitto, Mosquitto, enroll_agent, enrollment_token, free_port, wait_for
from tests.unit.agent.builders import write_config


@dataclass(frozen=True)
class AgentSpec:
    device_id: str
    labels: dict[str, str]


DEFAULT_AGENTS = (
    AgentSpec("dev-1", {"site": "a"}),
    AgentSpec("dev-2", {"site": "a"}),
    AgentSpec("dev-3", {"site": "b"}),
)


def start_agents(
    broker: Mosquitto,
    api: httpx.Client,
    workdir: Path,
    specs: tuple[AgentSpec, ...] = DEFAULT_AGENTS,
    api_ca: Path | None = None,
    **overrides: Any,
) -> dict[str, AgentProcess]:
    """One real agent process per spec, each with its own data dir and serving port, enrolled as production devices
    are: `edge-agent enroll` with an auto-approving enrollment token presetting its labels (one token per label set)
    gives it its identity (broker credentials and the CA the broker's certificate chains to, the pinned signing key,
    its artifact credential). `api_ca`: the control plane speaks HTTPS with a certificate from that CA (enrollment
    and downloads verify it). A broker with dynamic security gets the device's account from the control plane; a
    password-file broker learns it from the test. `overrides` are agent settings added after enrollment."""
    public_key = api.get("/v1/keys/signing").json()["public_key"]
    tokens: dict[tuple[tuple[str, str], ...], str] = {}
    agents: dict[str, AgentProcess] = {}
    for spec in specs:
        labels = tuple(sorted(spec.labels.items()))
        if labels not in tokens:
            tokens[labels] = enrollment_token(api, f"agents-{len(tokens)}", labels=spec.labels)
        home = workdir / spec.device_id
        home.mkdir(parents=True, exist_ok=True)
        serving = {"host": "127.0.0.1", "port": free_port()}
        config = write_config(home / "agent.yaml", home / "data", public_key, labels=spec.labels, serving=serving)
        accounts = None if isinstance(broker, DynsecMosquitto) else broker
        verify = ("--ca-file", str(api_ca)) if api_ca else ()
        enroll_agent(accounts, str(api.base_url), tokens[labels], config, spec.device_id, *verify)
        if overrides:
            written = yaml.safe_load(config.read_text())
            config.write_text(yaml.safe_dump(written | overrides))
        agents[spec.device_id] = AgentProcess(config, home / "agent.log").start()
    return agents


def agent_logs(agents: dict[str, AgentProcess], tail: int = 1500) -> str:
    return "\n".join(f"--- {name}:\n{agent.output()[-tail:]}" for name, agent in agents.items())


# --- what an operator sees -------------------------------------------------------------------------------------


def devices(api: httpx.Client) -> dict[str, dict[str, Any]]:
    return {d["id"]: d for d in api.get("/v1/devices").json()}


def served_version(device: dict[str, Any], model: str) -> int | None:
    """The version the device reports serving for `model` (None when it serves none)."""
    reported = device.get("reported") or {}
    for entry in reported.get("models", []):
        if entry["name"] == model and entry["health"] == "serving":
            return int(entry["version"])
    return None


def fleet_serves(api: httpx.Client, model: str, version: int, ids: tuple[str, ...]) -> bool:
    fleet = devices(api)
    return all(d in fleet and served_version(fleet[d], model) == version for d in ids)


def consistent(device: dict[str, Any]) -> bool:
    """Desired generation applied: the device has nothing left to do."""
    reported = device.get("reported") or {}
    return device.get("desired_generation") == reported.get("applied_generation")


def rollout(api: httpx.Client, rollout_id: str) -> dict[str, Any]:
    answer = api.get(f"/v1/rollouts/{rollout_id}")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def wait_phase(
    api: httpx.Client, rollout_id: str, phases: tuple[str, ...], timeout: float, why: Callable[[], str]
) -> dict[str, Any]:
    try:
        found: dict[str, Any] = wait_for(
            lambda: (r := rollout(api, rollout_id))["phase"] in phases and r, timeout=timeout, what=f"phase {phases}"
        )
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nrollout: {rollout(api, rollout_id)}\n{why()}") from None
    return found


def device_status(body: dict[str, Any]) -> dict[str, str]:
    return {d["device_id"]: d["status"] for d in body["devices"]}


def serving_urls(api: httpx.Client) -> dict[str, str]:
    return {i: d["reported"]["serving_url"] for i, d in devices(api).items() if d.get("reported")}


# --- load ------------------------------------------------------------------------------------------------------


def infer(url: str, model: str, rows: int = 1, client: httpx.Client | None = None) -> httpx.Response:
    x = np.ones((rows, FEATURES), dtype=np.float32)
    body = {"inputs": [{"name": "X", "shape": [rows, FEATURES], "datatype": "FP32", "data": x.ravel().tolist()}]}
    if client is not None:
        return client.post(f"{url}/v2/models/{model}/infer", json=body)
    return httpx.post(f"{url}/v2/models/{model}/infer", json=body, timeout=10)


def answered_version(url: str, model: str) -> int | None:
    answer = infer(url, model)
    return int(answer.json()["model_version"]) if answer.status_code == 200 else None


@dataclass
class LoadGenerator:
    """`threads` threads per URL, each sending requests until `stop()` or `max_requests` per thread.

    Bounded on purpose: a runaway loop can not outlive the test by more than `max_requests` requests.
    """

    urls: list[str]
    model: str
    threads: int = 2
    rows: int = 8
    max_requests: int = 20_000
    pause_s: float = 0.01  # leaves the 2 cores of CI to the agents and the control plane
    answers: list[tuple[str, int]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> LoadGenerator:
        for url in self.urls:
            for _ in range(self.threads):
                worker = threading.Thread(target=self._run, args=(url,), daemon=True)
                worker.start()
                self._workers.append(worker)
        return self

    def _run(self, url: str) -> None:
        with httpx.Client(timeout=10) as client:
            for _ in range(self.max_requests):
                if self._stop.is_set():
                    return
                try:
                    answer = infer(url, self.model, self.rows, client)
                    if answer.status_code == 200:
                        self.answers.append((url, int(answer.json()["model_version"])))
                    else:
                        self.failures.append(f"{url}: {answer.status_code} {answer.text[:200]}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{url}: {type(exc).__name__} {exc}")
                self._stop.wait(self.pause_s)

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=15)

    def versions_since(self, start: int) -> set[int]:
        return {v for _, v in self.answers[start:]}


# --- a link that can be cut ------------------------------------------------------------------------------------


@dataclass
class CuttableProxy:
    """Forwards loopback TCP connections to `upstream_port`, answering at most `bytes_per_s` per connection.

    `cut()` drops every connection it carries (the client sees a reset in the middle of its body) and refuses
    every new one until `heal()`.
    """

    upstream_port: int
    bytes_per_s: float = 2_000_000
    port: int = field(default_factory=free_port)
    downstream_bytes: int = 0
    cuts: int = 0
    request_heads: list[str] = field(default_factory=list)
    _refusing: bool = False
    _sockets: list[socket.socket] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _closed: bool = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> CuttableProxy:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed = True
        self._listener.close()
        self._drop_all()

    def cut(self) -> None:
        with self._lock:
            self._refusing = True
            self.cuts += 1
        self._drop_all()

    def heal(self) -> None:
        with self._lock:
            self._refusing = False

    def ranges_asked(self, path_part: str) -> list[str]:
        """`Range` header values of the requests for a path containing `path_part`."""
        found = []
        for head in self.request_heads:
            lines = head.split("\r\n")
            if path_part in lines[0]:
                found += [line.split(":", 1)[1].strip() for line in lines[1:] if line.lower().startswith("range:")]
        return found

    def _drop_all(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            try:  # RST rather than FIN: a cut link, not a finished answer
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                refusing = self._refusing
            if refusing:
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                client.close()
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.bytes_per_s), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, rate: float | None) -> None:
        try:
            while True:
                data = source.recv(16384)
                if not data:
                    break
                sink.sendall(data)
                if rate is None and data[:4] in (b"GET ", b"HEAD"):
                    self.request_heads.append(data.split(b"\r\n\r\n", 1)[0].decode(errors="replace"))
                if rate is not None:
                    self.downstream_bytes += len(data)
                    time.sleep(len(data) / rate)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
