"""The processes of the tunnel tests: `edgectl tunnel-gateway` on a control plane's data dir, and `edge-agent run`
enrolled with `edge-agent enroll` and keeping its one tunnel to that gateway (docs/tunnels.md).

Each helper starts a real process and waits for an observable condition (a log line, a socket), never a fixed time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from control_plane.domain.tunnels import service_socket
from tests.support import (
    EDGECTL,
    ControlPlaneProcess,
    Mosquitto,
    enroll_agent,
    enrollment_token,
    free_port,
    python_env,
    wait_for,
)

EDGE_AGENT = str(Path(sys.executable).parent / "edge-agent")


@dataclass
class Gateway:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    run_dir: Path
    host_key: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def socket(self, device_id: str, service: str) -> Path:
        return service_socket(self.run_dir, device_id, service)


@dataclass
class Agent:
    device_id: str
    process: subprocess.Popen[bytes]
    log: Path
    key_file: Path
    config: Path
    cloud_port: int
    serving_port: int

    def alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"{self.device_id} exited:\n{self.log.read_text()[-3000:]}")
        return True


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def tunnel_env(services: list[str], cloud_services: dict[str, str] | None = None) -> dict[str, str]:
    """The `tunnel.*` settings the gateway and the server share, as EDGE_CP_* variables."""
    return {
        "EDGE_CP_TUNNEL__SERVICES": json.dumps(services),
        "EDGE_CP_TUNNEL__CLOUD_SERVICES": json.dumps(cloud_services or {}),
    }


def start_gateway(
    server: ControlPlaneProcess, env: dict[str, str], host: str = "127.0.0.1", port: int | None = None
) -> Gateway:
    """`edgectl tunnel-gateway` on the server's data dir, listening on `host`; returns once it listens."""
    full_env = server.env() | env
    common = ["--data-dir", str(server.data_dir)]
    shown = subprocess.run(
        [EDGECTL, "tunnel-gateway", *common, "--print-host-key"],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    host_key = shown.stdout.strip()
    port = port or free_port()
    log = server.data_dir.parent / f"gateway-{port}.log"
    argv = [EDGECTL, "tunnel-gateway", *common, "--host", host, "--port", str(port)]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=full_env)
    gateway = Gateway(process, port, log, server.data_dir / "tunnels", host_key)

    def listening() -> bool:
        if process.poll() is not None:
            raise AssertionError(f"the gateway exited:\n{gateway.output()[-3000:]}")
        return "tunnel gateway listening" in gateway.output()

    try:
        wait_for(listening, timeout=60, what="the gateway to listen")
    except BaseException:
        stop(process)  # not handed to anyone who would stop it: it would outlive the session
        raise
    return gateway


def start_agent(
    server: ControlPlaneProcess,
    mosquitto: Mosquitto,
    gateway: Gateway,
    root: Path,
    device_id: str,
    services: dict[str, str],
    *,
    gateway_host: str = "127.0.0.1",
    mqtt: bool = True,
    netns: str | None = None,
) -> Agent:
    """An agent enrolled as `device_id` (by `edge-agent enroll` with a fresh enrollment token) whose tunnel exposes
    `services` (name -> HOST:PORT; its inference API as `kserve` too) and reaches `registry` on a local port.
    With `netns`, it runs inside that network namespace (`ip netns exec`); without `mqtt`, it keeps no broker
    connection (a device whose only link is its tunnel)."""
    root.mkdir(parents=True, exist_ok=True)
    config = root / "agent.yaml"
    serving_port = free_port()
    base = {"data_dir": str(root / "data"), "serving": {"host": "127.0.0.1", "port": serving_port}}
    config.write_text(yaml.safe_dump(base))
    with server.client() as api:
        token = enrollment_token(api, f"tunnel-{device_id}")
    written = enroll_agent(mosquitto, server.url, token, config, device_id)
    if not mqtt:
        written["mqtt"] = written.get("mqtt", {}) | {"enabled": False}
    cloud_port = free_port()
    written["tunnel"] = {
        "enabled": True,
        "host": gateway_host,
        "port": gateway.port,
        "host_key": gateway.host_key,
        "services": services,
        "cloud_services": {"registry": cloud_port},
    }
    config.write_text(yaml.safe_dump(written))
    log = root / "agent.log"
    argv = [EDGE_AGENT, "run", "--config", str(config)]
    if netns is not None:
        argv = ["ip", "netns", "exec", netns, *argv]
    with log.open("wb") as out:
        process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=python_env())
    return Agent(device_id, process, log, Path(written["device_key_file"]), config, cloud_port, serving_port)


def ask_unix(path: Path, line: bytes = b"hello\n") -> bytes:
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(line)
        return sock.makefile("rb").readline()


def ask_tcp(port: int, line: bytes = b"hello\n") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(line)
        return sock.makefile("rb").readline()


class DeviceWeb:
    """An HTTP service on the device's side of a tunnel (uvicorn on loopback, in this process): it shows what
    reached it, and streams in both directions one stage at a time, so a test can tell streaming from buffering.

    - `GET /headers`: the request's headers as JSON (what the device's service was sent).
    - `POST /upload`: reads the body; after its first chunk sets `upload_started` and waits for `release_upload`;
      answers {"bytes", "sha256"}.
    - `GET /download?size=N`: sends 64 KiB, waits for `release_download`, then the rest (N bytes of a pattern).
    - `GET /hang`: never answers.
    """

    def __init__(self) -> None:
        import threading

        import uvicorn
        from starlette.applications import Starlette
        from starlette.routing import Route

        self.port = free_port()
        self.seen: list[str] = []  # "METHOD /path" of every request, in order
        self.upload_started = threading.Event()
        self.release_upload = threading.Event()
        self.release_download = threading.Event()
        routes = [
            Route("/headers", self._headers),
            Route("/upload", self._upload, methods=["POST"]),
            Route("/download", self._download),
            Route("/hang", self._hang),
        ]
        app = Starlette(routes=routes)
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        wait_for(lambda: self._server.started, what="the device's web service")

    def close(self) -> None:
        self._server.should_exit = True
        self.release_upload.set()
        self.release_download.set()
        self._thread.join(timeout=10)

    async def _headers(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        self.seen.append(f"GET {request.url.path}")
        return JSONResponse({"headers": [[k, v] for k, v in request.headers.items()], "path": request.url.path})

    async def _upload(self, request: Any) -> Any:
        import asyncio
        import hashlib

        from starlette.responses import JSONResponse

        self.seen.append(f"POST {request.url.path}")
        digest, size = hashlib.sha256(), 0
        async for chunk in request.stream():
            if chunk and not self.upload_started.is_set():
                self.upload_started.set()
                await asyncio.to_thread(self.release_upload.wait, 30)
            digest.update(chunk)
            size += len(chunk)
        return JSONResponse({"bytes": size, "sha256": digest.hexdigest()})

    async def _download(self, request: Any) -> Any:
        import asyncio

        from starlette.responses import StreamingResponse

        self.seen.append(f"GET {request.url.path}")
        size = int(request.query_params["size"])

        async def body() -> Any:
            sent = 0
            while sent < size:
                if sent == 64 * 1024:
                    await asyncio.to_thread(self.release_download.wait, 30)
                chunk = pattern(sent, min(64 * 1024, size - sent))
                sent += len(chunk)
                yield chunk

        return StreamingResponse(body(), headers={"content-length": str(size)})

    async def _hang(self, request: Any) -> Any:
        import asyncio

        self.seen.append(f"GET {request.url.path}")
        await asyncio.sleep(3600)


def pattern(offset: int, size: int) -> bytes:
    """`size` bytes of a repeating pattern, as found at `offset` of an endless stream of it (checkable anywhere)."""
    block = bytes(range(256))
    start = offset % 256
    return (block[start:] + block * (size // 256 + 2))[:size]


class Source:
    """A TCP service on loopback that sends `size` bytes of `pattern` to each connection, then closes it (a device's
    service that ends the connection itself, after a large transfer)."""

    def __init__(self, size: int) -> None:
        import threading

        self.size = size
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket) -> None:
        with conn:
            for offset in range(0, self.size, 1 << 20):
                conn.sendall(pattern(offset, min(1 << 20, self.size - offset)))
