"""Reaching a device's exposed service where the tunnel gateway listens for it: a unix socket on this host
(`control_plane.domain.tunnels.service_socket`), by HTTP (httpx over the socket) or as a raw byte stream.

Both stream: a request body goes out as it arrives and an answer comes back as the device sends it, chunk by chunk,
never whole in memory. Every failure becomes one of the control plane's errors with the reason in words:
`NotConnected` (nothing listens: the device's tunnel is down), `BadGateway` (the service answered nothing, or broke
off) or `GatewayTimeout`. This module never chooses a socket path and never decides who may use one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import httpx

from control_plane.domain.errors import BadGateway, GatewayTimeout
from control_plane.domain.tunnel_sessions import NotConnected

CHUNK = 64 * 1024
MAX_POOLED = 256  # service sockets with kept-alive connections at once
KEPT = httpx.Limits(max_connections=100, max_keepalive_connections=8, keepalive_expiry=30)
DEVICE_HOST = "device"  # the Host a device's service sees: the operator's Host is never forwarded


class ServiceSockets:
    """Kept-alive HTTP connections per service socket (the least recently used of more than `MAX_POOLED` sockets are
    let go): a request on a kept connection costs no new channel through the tunnel."""

    def __init__(self, connect_timeout_s: float, read_timeout_s: float) -> None:
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._timeout = httpx.Timeout(
            connect=connect_timeout_s, read=read_timeout_s, write=read_timeout_s, pool=connect_timeout_s
        )
        self._clients: OrderedDict[Path, httpx.AsyncClient] = OrderedDict()

    def _client(self, socket: Path) -> tuple[httpx.AsyncClient, httpx.AsyncClient | None]:
        """The client of `socket`, and one let go to make room (for the caller to close)."""
        client = self._clients.pop(socket, None)
        if client is None:
            # A unix socket carries no TLS: verify=False only spares loading a CA bundle (20 ms) per client.
            transport = httpx.AsyncHTTPTransport(uds=str(socket), retries=0, verify=False, limits=KEPT)
            # trust_env=False: an HTTP(S)_PROXY in the environment must not divert a request from the socket.
            client = httpx.AsyncClient(
                transport=transport, timeout=self._timeout, follow_redirects=False, trust_env=False
            )
        self._clients[socket] = client
        evicted = self._clients.popitem(last=False)[1] if len(self._clients) > MAX_POOLED else None
        return client, evicted

    async def _forget(self, socket: Path) -> None:
        """Nothing listens at `socket` any more: its kept connections are of no use."""
        client = self._clients.pop(socket, None)
        if client is not None:
            await client.aclose()

    async def request(
        self,
        socket: Path,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: AsyncIterator[bytes] | None,
    ) -> HttpAnswer:
        """Send a request to the service at `socket` (`target`: its path and query, exactly as the operator sent
        them) and return as soon as the answer's head arrived; its body is read from the answer."""
        client, evicted = self._client(socket)
        if evicted is not None:
            await evicted.aclose()
        url = httpx.URL(scheme="http", host=DEVICE_HOST, raw_path=target.encode("latin-1"))
        request = client.build_request(method, url, headers=list(headers), content=body)
        try:
            response = await client.send(request, stream=True)
        except httpx.HTTPError as exc:
            explained = self._explain(exc)
            if isinstance(explained, NotConnected):
                await self._forget(socket)
            raise explained from exc
        return HttpAnswer(response, self._read_timeout_s)

    async def connect(self, socket: Path) -> SocketStream:
        """A byte stream to the service at `socket`."""
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(socket), limit=CHUNK), self._connect_timeout_s
            )
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise NotConnected(_NOT_LISTENING) from exc
        except TimeoutError as exc:
            raise GatewayTimeout(f"the tunnel gave no connection within {self._connect_timeout_s:g} s") from exc
        except OSError as exc:
            raise BadGateway(f"cannot connect to the tunnel: {exc}") from exc
        return SocketStream(reader, writer)

    def _explain(self, exc: httpx.HTTPError) -> Exception:
        if isinstance(exc, httpx.ConnectError):
            cause = exc.__context__ or exc.__cause__
            if isinstance(cause, FileNotFoundError | ConnectionRefusedError) or "No such file" in str(exc):
                return NotConnected(_NOT_LISTENING)
            return BadGateway(f"cannot connect to the tunnel: {exc}")
        if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
            return GatewayTimeout(f"the tunnel gave no connection within {self._connect_timeout_s:g} s")
        if isinstance(exc, httpx.TimeoutException):
            return GatewayTimeout(f"the device's service did not answer within {self._read_timeout_s:g} s")
        if isinstance(exc, httpx.RemoteProtocolError):
            return BadGateway(
                "the device's service closed the connection without answering (is it running on the device?)"
            )
        return BadGateway(f"the device's service could not be reached: {exc}")


_NOT_LISTENING = "the device is not connected: no tunnel exposes this service (is its agent running with a tunnel?)"


class HttpAnswer:
    """The head of a device's answer, and its body read as it arrives (`body`); `aclose` when done with it."""

    def __init__(self, response: httpx.Response, read_timeout_s: float) -> None:
        self._response = response
        self._read_timeout_s = read_timeout_s
        self.status = response.status_code
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]

    async def body(self) -> AsyncIterator[bytes]:
        """The body's bytes as sent (any content encoding left as it is)."""
        try:
            async for chunk in self._response.aiter_raw(CHUNK):
                yield chunk
        except httpx.TimeoutException as exc:
            raise GatewayTimeout(f"the device's answer stalled for {self._read_timeout_s:g} s") from exc
        except httpx.HTTPError as exc:
            raise BadGateway(f"the device's answer broke off: {exc or type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Done with the answer: its connection goes back to the pool when the body was read whole, else it is
        closed (never reused half-read)."""
        await self._response.aclose()


class SocketStream:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    async def read(self) -> bytes:
        """The next bytes from the service; b"" once it closed (a reset counts as closed)."""
        try:
            return await self._reader.read(CHUNK)
        except ConnectionError:
            return b""

    async def write(self, data: bytes) -> None:
        self._writer.write(data)
        await self._writer.drain()

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()
