"""Request bodies are counted while they stream in and refused with 413 the moment they pass their limit.

Without this an upload is spooled whole (to memory, then to a temp file) before any route sees it, so a size
limit checked by the route costs the attacker nothing. Starlette's `RequestBodyLimitMiddleware` does the counting
(and refuses a declared Content-Length past the limit before reading a byte); this module only chooses the limit
by kind of body and words the refusal. File uploads (multipart) may carry two files of `max_upload_bytes` (a model
and its samples) plus form overhead, and so may a body the tunnel proxy streams to a device; every other body gets
`max_body_bytes`. The per-file limit is the registry's
(`RegistryService._receive`), also 413.

It must never buffer a body itself, and never answer anything but 413 for a body past its limit.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.datastructures import Headers
from starlette.middleware.body_limit import MAX_BODY_SIZE_SCOPE_KEY, RequestBodyLimitMiddleware
from starlette.types import ASGIApp, Receive, Scope, Send

FORM_OVERHEAD_BYTES = 1024**2
FILES_PER_UPLOAD = 2


def upload_body_limit(max_upload_bytes: int) -> int:
    return FILES_PER_UPLOAD * max_upload_bytes + FORM_OVERHEAD_BYTES


class BodyLimits:
    """ASGI middleware: multipart bodies up to `upload_bytes`, any other body up to `body_bytes`."""

    def __init__(self, app: ASGIApp, upload_bytes: int, body_bytes: int) -> None:
        self._app = app
        self._limits = {True: upload_bytes, False: body_bytes}
        self._limited = {limit: RequestBodyLimitMiddleware(app, limit) for limit in self._limits.values()}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        streamed = headers.get("content-type", "").lower().startswith("multipart/") or _proxied(scope["path"])
        limit = self._limits[streamed]
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            # Refused before a byte of the body is read (Starlette would, too, but with a bare text/plain answer).
            await _refusal(limit)(scope, receive, send)
            return
        await self._limited[limit](scope, receive, send)


def _proxied(path: str) -> bool:
    """A body on its way to a device's service (`/v1/devices/{id}/services/{name}/...`): streamed through, never
    held, so bounded like a file upload rather than like a JSON command."""
    parts = path.split("/", 6)
    return len(parts) == 7 and parts[1:3] == ["v1", "devices"] and parts[4] == "services"


def _refusal(limit: object) -> JSONResponse:
    told = f"the {limit}-byte limit" if isinstance(limit, int) else "its limit"
    return JSONResponse(
        status_code=413,
        content={"detail": f"the request body is larger than {told}; nothing of it was kept"},
        headers={"Connection": "close"},
    )


async def _too_large(request: Request, _exc: Exception) -> JSONResponse:
    """A body that passed its limit while streaming in (Starlette raises; the limit is in the scope)."""
    return _refusal(request.scope.get(MAX_BODY_SIZE_SCOPE_KEY))


def install_body_limits(app: FastAPI, max_upload_bytes: int, max_body_bytes: int) -> None:
    app.add_middleware(BodyLimits, upload_bytes=upload_body_limit(max_upload_bytes), body_bytes=max_body_bytes)
    app.add_exception_handler(413, _too_large)
