"""Operators reach devices' exposed services through their tunnels (docs/tunnels.md): an HTTP proxy route, a
WebSocket carrying one raw TCP connection (`edgectl tunnel open`), and the sessions both open, listed and closed.

Thin: the relays live in control_plane/api/tunnel_relay.py, the sessions in control_plane/services/tunnel_sessions.py.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response, WebSocket

from control_plane.api.deps import PrincipalDep, ServiceUpstreamDep, TunnelSessionsDep
from control_plane.api.paging import link_next
from control_plane.api.permissions import PROXIED_METHODS, SERVICE_PROXY
from control_plane.api.schemas.tunnels import TunnelSessionOut
from control_plane.api.tunnel_relay import TCP_ROUTE, proxy_http, relay_tcp
from control_plane.domain.paging import DEFAULT_LIMIT, MAX_CURSOR, MAX_LIMIT

router = APIRouter(tags=["tunnels"])


async def proxy(
    device_id: Annotated[str, Path(max_length=128, description="The device.")],
    service: Annotated[str, Path(max_length=32, description="A service it exposes (tunnel.services).")],
    path: Annotated[str, Path(description="The path on the device's service; the query goes along.")],
    request: Request,
    principal: PrincipalDep,
    sessions: TunnelSessionsDep,
    upstream: ServiceUpstreamDep,
) -> Response:
    """Forward the request to the device's exposed service `service` (one of the gateway's `tunnel.services`),
    streaming both ways; the path after the service name and the query go as they are. The operator's
    Authorization header, cookies and hop-by-hop headers are not forwarded. 404: unknown device or service;
    502: the device is not connected, or its service answered nothing; 504: no answer in time. The answer
    carries `X-Tunnel-Session`, the session recorded for it."""
    del device_id, service, path  # declared for the API's description; the relay reads them, raw, from the request
    return await proxy_http(request, principal, sessions, upstream)


for _method in PROXIED_METHODS:  # one operation per method, each with its own OpenAPI id
    router.add_api_route(
        SERVICE_PROXY, proxy, methods=[_method], response_model=None, operation_id=f"proxy_{_method.lower()}"
    )


@router.websocket(TCP_ROUTE)
async def tcp(
    websocket: WebSocket, principal: PrincipalDep, sessions: TunnelSessionsDep, upstream: ServiceUpstreamDep
) -> None:
    """One raw TCP connection to the device's service, as WebSocket binary messages both ways (`edgectl tunnel
    open`). Refusals are HTTP answers to the handshake (401, 403, 404, 502, 504) with the reason."""
    await relay_tcp(websocket, principal, sessions, upstream)


@router.get("/v1/tunnel-sessions")
def list_sessions(
    request: Request,
    response: Response,
    sessions: TunnelSessionsDep,
    all_sessions: Annotated[bool, Query(alias="all", description="Closed sessions too (the history).")] = False,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Sessions per page.")] = DEFAULT_LIMIT,
    cursor: Annotated[
        str | None, Query(max_length=MAX_CURSOR, description="Where the page starts: from the previous page's Link.")
    ] = None,
) -> list[TunnelSessionOut]:
    """One page of tunnel sessions, newest first: the open ones, or with `all=true` every one recorded; the next
    page's URL comes in the `Link: <...>; rel="next"` header, absent on the last page (decision 0013)."""
    page = sessions.page(not all_sessions, limit, cursor)
    link_next(request, response, page.next_cursor)
    return [TunnelSessionOut.model_validate(s) for s in page.items]


@router.get("/v1/tunnel-sessions/{session_id}")
def get_session(session_id: str, sessions: TunnelSessionsDep) -> TunnelSessionOut:
    return TunnelSessionOut.model_validate(sessions.get(session_id))


@router.post("/v1/tunnel-sessions/{session_id}/close")
def close_session(session_id: str, sessions: TunnelSessionsDep) -> TunnelSessionOut:
    """Close an open session: its connection is cut and its record says `closed by operator`. 409 when it is
    closed already."""
    return TunnelSessionOut.model_validate(sessions.close(session_id))
