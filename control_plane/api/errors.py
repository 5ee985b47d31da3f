"""The one place service errors become HTTP statuses. Anything else reaching here is a bug (500)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, cast

from fastapi import FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, Response
from starlette.requests import HTTPConnection
from starlette.websockets import WebSocketState

from control_plane.domain.errors import (
    BadGateway,
    Conflict,
    Forbidden,
    GatewayTimeout,
    InvalidInput,
    NotFound,
    ServiceError,
    TooLarge,
    Unauthenticated,
    Unavailable,
)

STATUS_OF: dict[type[ServiceError], int] = {
    NotFound: 404,
    Conflict: 409,
    TooLarge: 413,  # before InvalidInput, its base: the first match wins
    InvalidInput: 422,
    Unavailable: 503,
    Unauthenticated: 401,
    Forbidden: 403,
    BadGateway: 502,
    GatewayTimeout: 504,
}


def _status(exc: ServiceError) -> int:
    for kind, status in STATUS_OF.items():
        if isinstance(exc, kind):
            return status
    return 400


async def _handle(connection: HTTPConnection, exc: Exception) -> JSONResponse | None:
    assert isinstance(exc, ServiceError)
    if isinstance(connection, WebSocket):
        await _refuse_websocket(connection, exc)
        return None
    return error_response(exc)


async def _refuse_websocket(websocket: WebSocket, exc: ServiceError) -> None:
    """A WebSocket refused before it was accepted gets the same HTTP answer as any request, as a denial response
    (the ASGI extension uvicorn implements): the client reads the status and the reason, not a bare 403. Where the
    server lacks the extension, or the socket was accepted already, it is closed with the reason (1008)."""
    if websocket.application_state is WebSocketState.CONNECTING and "websocket.http.response" in websocket.scope.get(
        "extensions", {}
    ):
        await websocket.send_denial_response(error_response(exc))
    elif websocket.application_state is not WebSocketState.DISCONNECTED:
        await websocket.close(code=1008, reason=close_reason(str(exc)))


def close_reason(text: str) -> str:
    """`text` cut to what a WebSocket close frame carries (123 bytes of UTF-8)."""
    return text.encode()[:123].decode(errors="ignore")


def error_response(exc: ServiceError) -> JSONResponse:
    # RFC 6750: a 401 names the scheme the client must use.
    headers = {"WWW-Authenticate": 'Bearer realm="edge-control-plane"'} if isinstance(exc, Unauthenticated) else None
    return JSONResponse(status_code=_status(exc), content={"detail": str(exc)}, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    # One handler for both kinds of route: Starlette hands it the WebSocket of a WebSocket route.
    app.add_exception_handler(ServiceError, cast(Callable[[Request, Exception], Awaitable[Response]], _handle))


def document_error_detail(openapi: dict[str, Any]) -> None:
    """Say in the OpenAPI document what a 422 really holds: FastAPI describes only its own validation list, but a
    service's InvalidInput answers 422 too, with `detail` as one sentence (`error_response`)."""
    schemas = openapi.get("components", {}).get("schemas", {})
    detail = schemas.get("HTTPValidationError", {}).get("properties", {}).get("detail")
    if detail is not None:
        schemas["HTTPValidationError"]["properties"]["detail"] = {
            "anyOf": [detail, {"type": "string"}],
            "title": "Detail",
        }
