"""Authentication and authorisation of every request.

- `authorize`, the app-wide dependency, looks the matched route up in control_plane/api/permissions.py,
  authenticates the caller and checks that its role holds the permission; the principal lands on
  `request.state.principal` (`PrincipalDep` in deps.py) for routes that record who acted.
- `AuthenticateBeforeBody`, an ASGI middleware, authenticates every request that carries a body (any method but
  GET/HEAD/OPTIONS) before anything reads that body: FastAPI parses JSON and spools multipart uploads before
  dependencies run, and nobody should be able to make the control plane parse or store bytes without a credential.
  Every anonymous operation is a GET, so this refuses nothing the table allows.
"""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from control_plane.api.errors import error_response
from control_plane.api.permissions import Access, requirement
from control_plane.domain.errors import Forbidden, ServiceError
from control_plane.domain.identity import Principal

log = logging.getLogger(__name__)

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


async def authorize(request: Request) -> None:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    needed = requirement(request.method, path) if path is not None else None
    if needed is None:
        log.error("refused %s %s: no permission declared in control_plane/api/permissions.py", request.method, path)
        raise Forbidden("this operation declares no permission, so nobody may call it")
    if needed is Access.ANONYMOUS:
        return
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):
        identity = request.app.state.runtime.identity
        principal = await run_in_threadpool(identity.authenticate, request.headers.get("authorization"))
        request.state.principal = principal
    assert isinstance(principal, Principal)
    if needed is Access.AUTHENTICATED or principal.may(needed):
        return
    raise Forbidden(f"{principal.name} ({principal.role.value}) lacks the permission {needed.value!r} this needs")


def principal_of(request: Request) -> Principal:
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
        identity = scope["app"].state.runtime.identity
        try:
            principal = await run_in_threadpool(identity.authenticate, Headers(scope=scope).get("authorization"))
        except ServiceError as exc:
            response: JSONResponse = error_response(exc)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)
