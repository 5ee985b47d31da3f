"""The edge side of the tunnel benchmark: devices whose tunnel is the agent's own `TunnelLink`, in processes of
their own (spawned), so that the gateway's figures are its own.

- `edge_main`: one device with the agent's inference app (KServe v2 over onnxruntime, uvicorn on loopback) and
  `Bulk`, a TCP service that sends or takes N bytes of a fixed pseudo-random pattern, both exposed through one link.
- `fleet_main`: N idle devices, one link each (a link runs its own thread and event loop), one service each.
A child is driven over a pipe ("go", "health", "stop"); nothing here measures.
"""

from __future__ import annotations

import multiprocessing
import random
import socket
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from benchmarks.fleet_simulation.mux import raise_fd_limit
from benchmarks.serving_overhead import agent_app, serve
from edge_agent.adapters.tunnel import TunnelLink, TunnelOptions

EDGE = "bench-edge"
PATTERN = random.Random(12).randbytes(4 * 1024 * 1024)  # what the bulk service sends and expects
CHUNK = 1024 * 1024  # read at most this much at a time
WRAPPED = PATTERN + PATTERN[:CHUNK]  # PATTERN from any offset, CHUNK bytes long, is one slice of it
MAX_TRANSFER = 4 * 1024**3
SPAWN = multiprocessing.get_context("spawn")


def link(cloud_port: int, host_key: str, device_id: str, key: Path, services: dict[str, tuple[str, int]]) -> TunnelLink:
    options = TunnelOptions(
        device_id=device_id, host="127.0.0.1", port=cloud_port, host_key=host_key, key_file=key, services=services
    )
    return TunnelLink(options)


class Bulk:
    """A TCP service on loopback: `get N` -> N bytes of PATTERN, then EOF; `put N` + N bytes -> `ok N` when every
    byte is PATTERN's (else `bad N`). N is bounded; the line is read within 32 bytes."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(120)
            verb, _, size = read_line(conn).decode(errors="replace").partition(" ")
            if not size.isdigit() or int(size) > MAX_TRANSFER or verb not in ("get", "put"):
                conn.sendall(b"bad request\n")
                return
            n = int(size)
            if verb == "get":
                send_pattern(conn, n)
                conn.shutdown(socket.SHUT_WR)
            else:
                intact = receive_pattern(conn, n)
                conn.sendall(b"%s %d\n" % (b"ok" if intact else b"bad", n))


def read_line(sock: socket.socket, limit: int = 32) -> bytes:
    """One line, unbuffered (the bytes after it are the payload's), without its newline; at most `limit` bytes."""
    line = b""
    while len(line) < limit and not line.endswith(b"\n"):
        byte = sock.recv(1)
        if not byte:
            break
        line += byte
    return line.rstrip(b"\n")


def send_pattern(sock: socket.socket, n: int) -> None:
    view = memoryview(PATTERN)
    for start in range(0, n, len(PATTERN)):
        sock.sendall(view[: min(len(PATTERN), n - start)])


def receive_pattern(sock: socket.socket, n: int) -> bool:
    """Read exactly n bytes, a chunk at a time into one reused buffer; whether they are PATTERN's. No allocation
    or page faults in proportion to n: the figure is the path's, not this reader's."""
    buffer = memoryview(bytearray(CHUNK))
    got, intact = 0, True
    while got < n:
        count = sock.recv_into(buffer, min(CHUNK, n - got))
        if count == 0:
            raise RuntimeError(f"the connection closed after {got:,} of {n:,} bytes")
        offset = got % len(PATTERN)
        intact = intact and buffer[:count].tobytes() == WRAPPED[offset : offset + count]  # bytes ==: a memcmp
        got += count
    return intact


def edge_main(pipe: Connection, cloud_port: int, host_key: str, key: str, model: str) -> None:
    """The edge device's process: the agent's inference app and the bulk service, exposed through one link."""
    import onnxruntime as ort

    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    server, url = serve(agent_app(session, "mlp"))
    bulk = Bulk()
    serving = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
    tunnel = link(cloud_port, host_key, EDGE, Path(key), {"kserve": serving, "bulk": ("127.0.0.1", bulk.port)})
    tunnel.start()
    pipe.send((url, bulk.port))
    pipe.recv()
    tunnel.stop()
    server.should_exit = True


def fleet_main(pipe: Connection, cloud_port: int, host_key: str, keys: dict[str, str]) -> None:
    """The idle fleet's process: one TunnelLink per device, all started at once on "go", stopped on "stop"."""
    raise_fd_limit(8 * len(keys) + 256)
    links = [link(cloud_port, host_key, d, Path(k), {"kserve": ("127.0.0.1", 9)}) for d, k in keys.items()]
    pipe.send("ready")
    pipe.recv()
    for each in links:
        each.start()
    while (command := pipe.recv()) == "health":
        healths = [each.health() for each in links]
        errors = sorted({h.last_error for h in healths if h.last_error})
        pipe.send((sum(h.connected for h in healths), sum(h.reconnects for h in healths), errors[:3]))
    with ThreadPoolExecutor(32) as pool:
        list(pool.map(lambda each: each.stop(), links))
    pipe.send(command)


@contextmanager
def child(target: Callable[..., None], *args: Any) -> Iterator[tuple[Connection, int]]:
    """Run `target(pipe, *args)` in a spawned process (its pipe and pid); on leaving, tell it "stop", wait for it."""
    ours, theirs = SPAWN.Pipe()
    process = SPAWN.Process(target=target, args=(theirs, *args), daemon=True)
    process.start()
    theirs.close()  # ours alone: recv() ends with EOFError when the child dies
    try:
        yield ours, int(process.pid or 0)
    finally:
        if process.is_alive():
            ours.send("stop")
            process.join(timeout=60)
        if process.is_alive():
            process.terminate()
            process.join(timeout=10)
