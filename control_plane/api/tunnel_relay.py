"""Relaying an operator's bytes to a device's service through its tunnel: one HTTP exchange (the proxy route) or one
raw TCP connection carried in WebSocket binary messages (`edgectl tunnel open`), each a tunnel session.

Both directions stream: the request body goes to the device as it arrives, the answer comes back as the device
sends it, and byte counts stay in memory (`LiveSession`) until the session ends. A relay ends on the first of: its
transfer finished, the operator's client went away, the device's side closed or broke, or the session was stopped
(an operator's close, an idle or absolute timeout: `TunnelSessionService`). The operator's Authorization header,
cookies and hop-by-hop headers never reach the device (`control_plane.domain.tunnel_sessions.forwarded_headers`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from control_plane.api.audit_trail import AUDITED_AS_SESSION
from control_plane.api.errors import close_reason
from control_plane.api.permissions import SERVICE_PROXY, WEBSOCKET
from control_plane.domain.errors import BadGateway, GatewayTimeout
from control_plane.domain.identity import Principal
from control_plane.domain.tunnel_sessions import (
    NOT_FORWARDED_TO_DEVICE,
    NOT_RELAYED_FROM_DEVICE,
    NotConnected,
    SessionEnd,
    SessionKind,
    forwarded_headers,
    request_line,
)
from control_plane.services.tunnel_sessions import (
    ByteStream,
    LiveSession,
    ServiceUpstream,
    SessionRequest,
    TunnelSessionService,
    UpstreamAnswer,
)

log = logging.getLogger(__name__)

TCP_ROUTE = "/v1/devices/{device_id}/tunnel/{service}"
SESSION_HEADER = "X-Tunnel-Session"  # the session's id, on the proxied answer and the WebSocket handshake
# How a WebSocket carrying a tcp session closes, by how the session ended (RFC 6455 7.4.1).
CLOSE_CODES = {
    SessionEnd.SERVICE_CLOSED: 1000,
    SessionEnd.CLIENT_CLOSED: 1000,
    SessionEnd.IDLE_TIMEOUT: 1008,
    SessionEnd.ABSOLUTE_TIMEOUT: 1008,
    SessionEnd.OPERATOR_CLOSED: 1008,
    SessionEnd.DEVICE_GONE: 1011,
    SessionEnd.ERROR: 1011,
}


class _Stopped:
    """An event a session's stop sets from any thread (the reaper's, an operator's request's)."""

    def __init__(self, live: LiveSession) -> None:
        loop = asyncio.get_running_loop()
        self._live = live
        self._event = asyncio.Event()

        def stop() -> None:
            with contextlib.suppress(RuntimeError):  # the loop closed: the relay is gone already
                loop.call_soon_threadsafe(self._event.set)

        live.on_stop(stop)

    async def wait(self) -> tuple[SessionEnd, str | None]:
        """Once stopped: the ending the stop recorded (`finish` keeps it: the first ending wins)."""
        await self._event.wait()
        return self._live.ended or SessionEnd.OPERATOR_CLOSED, None


# -- HTTP --------------------------------------------------------------------------------------------------------


async def proxy_http(
    request: Request, principal: Principal, sessions: TunnelSessionService, upstream: ServiceUpstream
) -> Response:
    """Forward `request` (routed by the proxy route) to the device's service; its answer, streamed back."""
    device_id, service = request.path_params["device_id"], request.path_params["service"]
    target = _raw_target(request)
    asked = SessionRequest(
        device_id=device_id,
        service=service,
        kind=SessionKind.HTTP,
        request_id=str(request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex),
        method=request.method,
        route=SERVICE_PROXY,
        path=request.url.path,
        request=request_line(request.method, target.split("?", 1)[0]),
    )
    live = await run_in_threadpool(sessions.open, principal, asked)
    request.scope.setdefault("state", {})[AUDITED_AS_SESSION] = live.id
    stopped = _Stopped(live)
    headers = forwarded_headers(request.headers.items(), NOT_FORWARDED_TO_DEVICE)
    has_body = "content-length" in request.headers or "transfer-encoding" in request.headers
    body = _counted(request.stream(), live.to_device) if has_body else None
    try:
        answer = await upstream.request(live.socket, request.method, target, headers, body)
    except (BadGateway, GatewayTimeout) as exc:
        raise await _unreachable(sessions, live, exc) from exc
    except ClientDisconnect:  # the operator's client went away while its body was on its way
        sessions.finish(live, SessionEnd.CLIENT_CLOSED, None)
        raise
    except BaseException as exc:  # its body passed its limit (413), or the relay was cancelled
        sessions.finish(live, SessionEnd.ERROR, str(exc) or type(exc).__name__)
        raise
    return RelayedAnswer(answer, live, sessions, stopped)


async def _unreachable(
    sessions: TunnelSessionService, live: LiveSession, exc: BadGateway | GatewayTimeout
) -> BadGateway | GatewayTimeout:
    """The session ends (`device gone` when nothing listens, else an error); the refusal names the service."""
    end = SessionEnd.DEVICE_GONE if isinstance(exc, NotConnected) else SessionEnd.ERROR
    sessions.finish(live, end, str(exc))
    return type(exc)(f"{live.record.device_id}/{live.record.service}: {exc}")


def _raw_target(request: Request) -> str:
    """The path under `.../services/{name}/` and the query, exactly as the operator sent them (not re-encoded):
    the route's first six segments are fixed and neither a device id nor a service name holds a `/`."""
    raw = request.scope.get("raw_path") or request.url.path.encode()
    suffix = raw.split(b"/", 6)[6] if raw.count(b"/") >= 6 else b""
    query = request.scope.get("query_string", b"")
    return "/" + suffix.decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


async def _counted(chunks: AsyncIterator[bytes], count: Callable[[int], None]) -> AsyncIterator[bytes]:
    async for chunk in chunks:
        if chunk:
            count(len(chunk))
            yield chunk


class RelayedAnswer(Response):
    """The device's answer as an ASGI response: its head at once, its body as it arrives; the session's end is
    recorded when the body is through, the operator's client goes away, or the session is stopped."""

    def __init__(
        self, answer: UpstreamAnswer, live: LiveSession, sessions: TunnelSessionService, stopped: _Stopped
    ) -> None:
        self.status_code = answer.status
        self.background = None
        self._answer = answer
        self._live = live
        self._sessions = sessions
        self._stopped = stopped
        self._relayed_all = False
        relayed = forwarded_headers(answer.headers, NOT_RELAYED_FROM_DEVICE)
        self._head = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in relayed]
        self._head.append((SESSION_HEADER.lower().encode(), live.id.encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        end: SessionEnd = SessionEnd.ERROR
        error: str | None = "the relay stopped unexpectedly"
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self._head})
            end, error = await _first_to_end(self._pump(send), _client_gone(receive), self._stopped.wait())
            if end is SessionEnd.CLIENT_CLOSED and self._relayed_all:
                end = SessionEnd.COMPLETED  # the client had the whole answer and hung up before the last send returned
        finally:
            with contextlib.suppress(Exception):
                await self._answer.aclose()
            self._sessions.finish(self._live, end, error)
        if end is not SessionEnd.COMPLETED and end is not SessionEnd.CLIENT_CLOSED:
            # The head went out already: leaving the answer unfinished makes the server drop the connection, the only
            # way left to say the body is cut short (ending it normally would pass a truncated body for a whole one).
            record = self._live.record
            log.warning("answer of %s/%s cut short: %s", record.device_id, record.service, error or end.value)

    async def _pump(self, send: Send) -> tuple[SessionEnd, str | None]:
        try:
            async for chunk in self._answer.body():
                self._live.from_device(len(chunk))
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        except NotConnected as exc:
            return SessionEnd.DEVICE_GONE, str(exc)
        except (BadGateway, GatewayTimeout) as exc:
            return SessionEnd.ERROR, str(exc)
        except OSError as exc:  # the operator's connection broke while a chunk went out
            return SessionEnd.CLIENT_CLOSED, str(exc) or None
        self._relayed_all = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return SessionEnd.COMPLETED, None


async def _client_gone(receive: Receive) -> tuple[SessionEnd, str | None]:
    while (await receive())["type"] != "http.disconnect":
        pass  # what is left of a request body the device did not read
    return SessionEnd.CLIENT_CLOSED, None


async def _first_to_end(*contenders: Awaitable[tuple[SessionEnd, str | None]]) -> tuple[SessionEnd, str | None]:
    """Run the contenders (each says how the session ended, should it finish first) until the first finishes;
    cancel the rest."""
    tasks = [asyncio.ensure_future(aw) for aw in contenders]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    first = next(task for task in tasks if task in done)
    failed = first.exception()
    if failed is not None:
        log.error("tunnel relay failed", exc_info=failed)
        return SessionEnd.ERROR, str(failed) or type(failed).__name__
    return first.result()


# -- TCP over a WebSocket -----------------------------------------------------------------------------------------


async def relay_tcp(
    websocket: WebSocket, principal: Principal, sessions: TunnelSessionService, upstream: ServiceUpstream
) -> None:
    """Carry one TCP connection between the operator's WebSocket (binary messages) and the device's service."""
    device_id, service = websocket.path_params["device_id"], websocket.path_params["service"]
    asked = SessionRequest(
        device_id=device_id,
        service=service,
        kind=SessionKind.TCP,
        request_id=uuid.uuid4().hex,
        method=WEBSOCKET,
        route=TCP_ROUTE,
        path=websocket.url.path,
    )
    live = await run_in_threadpool(sessions.open, principal, asked)  # refusals: a denial response (api/errors.py)
    stopped = _Stopped(live)
    try:
        stream = await upstream.connect(live.socket)
    except (BadGateway, GatewayTimeout) as exc:
        raise await _unreachable(sessions, live, exc) from exc
    end: SessionEnd = SessionEnd.ERROR
    error: str | None = "the relay stopped unexpectedly"
    try:
        await websocket.accept(headers=[(SESSION_HEADER.lower().encode(), live.id.encode())])
        end, error = await _first_to_end(
            _to_device(websocket, stream, live), _from_device(websocket, stream, live), stopped.wait()
        )
    finally:
        await stream.close()
        sessions.finish(live, end, error)
        if end is not SessionEnd.CLIENT_CLOSED:
            # the ending recorded first (an operator's close, a timeout) is the one the client is told
            recorded = await run_in_threadpool(sessions.get, live.id)
            told = recorded.ended or end
            with contextlib.suppress(Exception):  # the client may be gone already
                await websocket.close(code=CLOSE_CODES[told], reason=close_reason(recorded.error or told.value))


async def _to_device(websocket: WebSocket, stream: ByteStream, live: LiveSession) -> tuple[SessionEnd, str | None]:
    while True:
        try:
            message = await websocket.receive()
        except WebSocketDisconnect:
            return SessionEnd.CLIENT_CLOSED, None
        if message["type"] == "websocket.disconnect":
            return SessionEnd.CLIENT_CLOSED, None
        data = message.get("bytes") or (message.get("text") or "").encode()
        if not data:
            continue
        try:
            await stream.write(data)
        except OSError:
            return _device_side_end(live)
        live.to_device(len(data))


async def _from_device(websocket: WebSocket, stream: ByteStream, live: LiveSession) -> tuple[SessionEnd, str | None]:
    while True:
        data = await stream.read()
        if not data:
            return _device_side_end(live)
        live.from_device(len(data))
        try:
            await websocket.send_bytes(data)
        except (WebSocketDisconnect, RuntimeError, OSError):  # the operator's side is gone
            return SessionEnd.CLIENT_CLOSED, None


def _device_side_end(live: LiveSession) -> tuple[SessionEnd, str | None]:
    """The device's side closed: its service ended the connection, or the whole tunnel went (its socket is gone)."""
    if not live.socket.exists():
        return SessionEnd.DEVICE_GONE, "the device's tunnel closed"
    return SessionEnd.SERVICE_CLOSED, None
