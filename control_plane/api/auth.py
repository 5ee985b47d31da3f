"""Authentication and authorisation of every request.

- `authorize`, the app-wide dependency, looks the matched route up in control_plane/api/permissions.py,
  authenticates the caller and checks that its role holds the permission; the principal lands on
  `request.state.principal` (`PrincipalDep` in deps.py) for routes that record who acted. It runs for WebSocket
  routes too (their entry's method is `WEBSOCKET`), before the socket is accepted.
- `AuthenticateBeforeBody`, an ASGI middleware, authenticates every request that carries a body (any method but
  GET/HEAD/OPTIONS) before anything reads that body, and refuses it when the caller's role lacks the permission of
  the route it matches: FastAPI parses JSON and spools multipart uploads before dependencies run, and nobody should
  be able to make the control plane parse or store bytes it would not let them send (without the check, a viewer's
  malformed JSON got a 422 about the body instead of the 403 its role earns). Every anonymous operation is a GET,
  so this refuses nothing the table allows. One exception: `POST /v1/enroll` is authenticated by an enrollment token
  (or a device's own token) through `EnrollmentService.authenticate`, and its body is read here, whole, only up to
  `MAX_ENROLL_BODY_BYTES` (past that: 413 before it is parsed).
"""

from __future__ import annotations

import functools
import logging
import re

from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import HTTPConnection
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.api.errors import error_response
from control_plane.api.permissions import PERMISSIONS, WEBSOCKET, Access, Requirement, requirement
from control_plane.domain.errors import Forbidden, ServiceError
from control_plane.domain.identity import Principal, Role
from edge_agent.protocol.enrollment import ENROLL_PATH, MAX_ENROLL_BODY_BYTES

log = logging.getLogger(__name__)

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authorize(request: HTTPConnection) -> None:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    method = WEBSOCKET if request.scope["type"] == "websocket" else request.scope["method"]
    needed = requirement(method, path) if path is not None else None
    if needed is None:
        log.error("refused %s %s: no permission declared in control_plane/api/permissions.py", method, path)
        raise Forbidden("this operation declares no permission, so nobody may call it")
    if needed is Access.ANONYMOUS:
        return
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        runtime = request.app.state.runtime
        service = runtime.enrollment if needed is Access.ENROLLMENT else runtime.identity
        principal = await run_in_threadpool(service.authenticate, request.headers.get("authorization"))
        request.state.principal = principal
    assert isinstance(principal, Principal)
    permit(principal, needed)


def permit(principal: Principal, needed: Requirement) -> None:
    """Raise Forbidden unless `principal` may do what `needed` asks."""
    if needed is Access.ANONYMOUS or needed is Access.AUTHENTICATED:
        return
    if needed is Access.ENROLLMENT:
        if principal.role is Role.DEVICE:  # an enrollment token's principal, or a device's own token
            return
        raise Forbidden("only an enrollment token, or a device's own token (key rotation), may enroll")
    if principal.may(needed):
        return
    raise Forbidden(f"{principal.name} ({principal.role.value}) lacks the permission {needed.value!r} this needs")


def principal_of(request: HTTPConnection) -> Principal:
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        raise RuntimeError("no principal: the route is anonymous or authorize did not run")
    return principal


class AuthenticateBeforeBody:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in _READS:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "POST" and scope["path"] == ENROLL_PATH:
            await self._enroll(scope, receive, send)
            return
        identity = scope["app"].state.runtime.identity
        try:
            principal = await run_in_threadpool(identity.authenticate, Headers(scope=scope).get("authorization"))
            scope.setdefault("state", {})["principal"] = principal  # the audit trail names who was refused
            refusal = _refused_before_body(principal, scope["method"], scope["path"])
            if refusal is not None:
                raise refusal
        except ServiceError as exc:
            response: JSONResponse = error_response(exc)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _enroll(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The enroll route: its own credential, and a body read whole here within its small bound."""
        enrollment = scope["app"].state.runtime.enrollment
        try:
            principal = await run_in_threadpool(enrollment.authenticate, Headers(scope=scope).get("authorization"))
        except ServiceError as exc:
            await error_response(exc)(scope, receive, send)
            return
        body = await _bounded_body(receive, MAX_ENROLL_BODY_BYTES)
        if body is None:
            too_large = JSONResponse(
                status_code=413,
                content={"detail": f"an enrollment request is at most {MAX_ENROLL_BODY_BYTES} bytes"},
                headers={"Connection": "close"},
            )
            await too_large(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # only a disconnect can come after the body
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def _bounded_body(receive: Receive, limit: int) -> bytes | None:
    """The request body, or None as soon as it passes `limit` bytes (the rest is never read)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(chunks)
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _refused_before_body(principal: Principal, method: str, path: str) -> Forbidden | None:
    """Forbidden when the table names operations for `method` and `path` and `principal` may call none of them.

    Matched on the table's path templates, not on the router (which has not run yet); a request the table knows
    nothing of goes on, and `authorize` or the router answers it.
    """
    refusals: list[Forbidden] = []
    for (entry_method, template), needed in PERMISSIONS.items():
        if entry_method == method and _template_pattern(template).fullmatch(path):
            try:
                permit(principal, needed)
            except Forbidden as exc:
                refusals.append(exc)
            else:
                return None
    return refusals[0] if refusals else None


@functools.cache
def _template_pattern(template: str) -> re.Pattern[str]:
    parts = re.split(r"(\{[^}]+\})", template)
    return re.compile("".join(_part_pattern(part) for part in parts))


def _part_pattern(part: str) -> str:
    if not part.startswith("{"):
        return re.escape(part)
    return ".*" if part.endswith(":path}") else "[^/]+"  # Starlette's `path` convertor spans segments
