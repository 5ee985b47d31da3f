"""`edgectl tunnel open`: raw TCP to a device's service, through the control plane (docs/tunnels.md).

Each local connection (one accepted on 127.0.0.1:PORT, or stdin/stdout with `--stdio`, e.g. as an SSH
ProxyCommand) becomes one WebSocket to `/v1/devices/{id}/tunnel/{service}`, authenticated with the operator's
bearer token, whose binary messages carry the bytes both ways; the control plane records it as a `tcp` session.
When either side closes, the other is closed too, and why the control plane ended it (idle timeout, closed by an
operator, the device gone) is told on stderr. The only importer of the `websockets` library (an import-linter
contract); it never listens on anything but loopback and never prints the token.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import ssl
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from control_plane.cli.client import CliError, RequestRejected, ServerUnreachable, format_detail

CHUNK = 64 * 1024
SESSION_HEADER = "X-Tunnel-Session"
Say = Callable[[str], None]  # a line for the operator (stderr)


@dataclass(frozen=True)
class Endpoint:
    """Where the WebSocket goes and what it carries to get in."""

    base_url: str  # the control plane's http(s) URL
    device_id: str
    service: str
    token: str | None
    verify: ssl.SSLContext | bool

    @property
    def path(self) -> str:
        return f"/v1/devices/{quote(self.device_id, safe='')}/tunnel/{quote(self.service, safe='')}"

    @property
    def url(self) -> str:
        base = httpx.URL(self.base_url)
        scheme = "wss" if base.scheme == "https" else "ws"
        return str(base.copy_with(scheme=scheme, raw_path=(base.path.rstrip("/") + self.path).encode()))

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("wss://"):
            return None
        return self.verify if isinstance(self.verify, ssl.SSLContext) else ssl.create_default_context()


async def open_session(endpoint: Endpoint) -> ClientConnection:
    """The WebSocket of one new tcp session; a refusal (401, 403, 404, 502, 504) as the control plane words it."""
    headers = {"Authorization": f"Bearer {endpoint.token}"} if endpoint.token else {}
    try:
        return await connect(
            endpoint.url,
            additional_headers=headers,
            ssl=endpoint.ssl_context(),
            max_size=4 * CHUNK,
            open_timeout=30,
            compression=None,  # bytes of an SSH session or a TLS stream do not compress
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        raise RequestRejected("WEBSOCKET", endpoint.path, status, _detail(exc.response.body)) from exc
    except (OSError, TimeoutError, InvalidHandshake) as exc:
        raise ServerUnreachable(endpoint.base_url, str(exc) or type(exc).__name__) from exc


def _detail(body: bytes | None) -> str:
    try:
        return format_detail(json.loads(body or b""))
    except ValueError:
        return (body or b"").decode(errors="replace").strip() or "refused"


Read = Callable[[], Awaitable[bytes]]  # b"": the local side closed
Write = Callable[[bytes], Awaitable[None]]


async def pipe(websocket: ClientConnection, read: Read, write: Write) -> str | None:
    """Carry bytes both ways until one side closes; the control plane's reason when it ended the session for
    another reason than the local side closing or the device's service closing (None then)."""

    async def upstream() -> None:
        while data := await read():
            await websocket.send(data)
        await websocket.close()

    async def downstream() -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in websocket:
                await write(message if isinstance(message, bytes) else message.encode())

    tasks = [asyncio.ensure_future(upstream()), asyncio.ensure_future(downstream())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await websocket.close()
    received = websocket.protocol.close_rcvd
    if received is None or received.code == 1000:
        return None
    return received.reason or f"closed with code {received.code}"


async def serve_port(endpoint: Endpoint, port: int, say: Say) -> None:
    """Listen on 127.0.0.1:`port` (0: any free port) until SIGINT/SIGTERM; each connection is one session."""
    counter = iter(range(1, 1 << 62))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = next(counter)
        try:
            websocket = await open_session(endpoint)
        except CliError as exc:
            say(f"connection {number}: refused: {exc}")
            writer.close()
            return
        session = websocket.response.headers.get(SESSION_HEADER, "?") if websocket.response else "?"
        say(f"connection {number}: session {session}")

        async def write(data: bytes) -> None:
            writer.write(data)
            await writer.drain()

        try:
            why = await pipe(websocket, lambda: _read_or_eof(reader), write)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        say(f"connection {number}: session {session} ended" + (f": {why}" if why else ""))

    server = await asyncio.start_server(handle, "127.0.0.1", port, limit=CHUNK)
    bound = server.sockets[0].getsockname()[1]
    say(f"forwarding 127.0.0.1:{bound} -> {endpoint.device_id}/{endpoint.service} (Ctrl-C to stop)")
    async with server:
        await _until_signalled()


async def serve_stdio(endpoint: Endpoint, say: Say) -> str | None:
    """One session on stdin/stdout (an SSH ProxyCommand); the control plane's reason when it ended it."""
    websocket = await open_session(endpoint)
    loop = asyncio.get_running_loop()
    stdout = sys.stdout.fileno()
    read = await _stdin_reader()

    async def write(data: bytes) -> None:
        await loop.run_in_executor(None, _write_all, stdout, data)

    why = await pipe(websocket, read, write)
    if why:
        say(f"tunnel to {endpoint.device_id}/{endpoint.service} closed: {why}")
    return why


async def _stdin_reader() -> Read:
    """Reads of stdin that a closing session can cancel (a pipe or a socket, as ssh gives a ProxyCommand); a
    regular file is read in a worker thread (it never blocks: it ends)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=CHUNK)
    try:
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin.buffer)
    except ValueError:  # not a pipe, socket or character device
        stdin = sys.stdin.fileno()
        return lambda: loop.run_in_executor(None, os.read, stdin, CHUNK)
    return lambda: _read_or_eof(reader)


async def _read_or_eof(reader: asyncio.StreamReader) -> bytes:
    try:
        return await reader.read(CHUNK)
    except ConnectionError:
        return b""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
