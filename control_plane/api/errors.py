"""The one place service errors become HTTP statuses. Anything else reaching here is a bug (500)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from control_plane.domain.errors import (
    Conflict,
    Forbidden,
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
}


def _status(exc: ServiceError) -> int:
    for kind, status in STATUS_OF.items():
        if isinstance(exc, kind):
            return status
    return 400


async def _handle(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    return error_response(exc)


def error_response(exc: ServiceError) -> JSONResponse:
    # RFC 6750: a 401 names the scheme the client must use.
    headers = {"WWW-Authenticate": 'Bearer realm="edge-control-plane"'} if isinstance(exc, Unauthenticated) else None
    return JSONResponse(status_code=_status(exc), content={"detail": str(exc)}, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServiceError, _handle)


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
