"""The audit middleware: a request id on every answer, and an audit record of every mutating call and refusal.

A pure ASGI middleware, installed outside `AuthenticateBeforeBody` (create_app adds it after, and Starlette makes
the last added the outermost) so that it also sees the 401s and 403s that middleware answers by itself.

- Request id: the client's `X-Request-ID` when it matches `[A-Za-z0-9._-]{1,64}`, else a new uuid4 (hex). It is
  returned as `X-Request-ID` on every answer and kept in `scope["state"]["request_id"]`.
- What is recorded (control_plane/domain/audit.py, `is_audited`): any method but GET/HEAD/OPTIONS whatever the
  outcome, and any 401/403; not a request the tunnel proxy relayed to a device, whose session's audit record
  (written when it opened) stands for it (`AUDITED_AS_SESSION`). Who: the principal `authorize` or
  `AuthenticateBeforeBody` left in `scope["state"]["principal"]` (else "anonymous"); the route template the router
  left in `scope["route"]`; the path; the status; for a status >= 400 the `detail` of the JSON error body (at most
  its first 2 KiB are looked at).
- When: as the answer's last body chunk passes, before it is forwarded: a caller who saw the answer complete can
  read the record. The write runs in a worker thread and never fails the request (services/audit.py).

It must never look at a request body or keep a header: bodies and headers carry secrets.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from control_plane.domain.audit import ANONYMOUS, AuditEntry, accepted_request_id, is_audited
from control_plane.domain.identity import Principal
from edge_agent.protocol.validation import REQUEST_PARTS, describe_error

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
# Set on a request the tunnel proxy relayed as a session: the session's own audit record (who, which device and
# service, what) stands for it, so the device's answer to it is not recorded a second time.
AUDITED_AS_SESSION = "audited_as_tunnel_session"
MAX_ERROR_BODY = 2048  # bytes of an error answer kept to find its `detail`


@dataclass
class _Answer:
    """What passed through `send` so far."""

    status: int | None = None
    body: bytearray = field(default_factory=bytearray)
    recorded: bool = False


class AuditTrail:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = accepted_request_id(Headers(scope=scope).get(REQUEST_ID_HEADER)) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        answer = _Answer()

        async def send_and_record(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer.status = int(message["status"])
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            elif message["type"] == "http.response.body":
                if answer.status is not None and answer.status >= 400 and len(answer.body) < MAX_ERROR_BODY:
                    answer.body += message.get("body", b"")[: MAX_ERROR_BODY - len(answer.body)]
                if not message.get("more_body", False):
                    await self._record(scope, request_id, answer)
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        except Exception:
            if answer.status is None:
                # Nothing was answered yet: answer the 500 here, so that it too carries the request id (Starlette's
                # ServerErrorMiddleware sees the answer started and only re-raises, for the server to log).
                body = {"detail": f"internal server error (request id {request_id})"}
                await send_and_record(_start(500))
                await send_and_record({"type": "http.response.body", "body": json.dumps(body).encode()})
            raise
        finally:
            if not answer.recorded:  # the answer never completed: an error mid-stream, a disconnect
                with anyio.CancelScope(shield=True):
                    await self._record(scope, request_id, answer)

    async def _record(self, scope: Scope, request_id: str, answer: _Answer) -> None:
        if answer.recorded:
            return
        answer.recorded = True
        status = answer.status if answer.status is not None else 500
        if not is_audited(scope["method"], status) or scope.get("state", {}).get(AUDITED_AS_SESSION):
            return
        try:
            entry = _entry(scope, request_id, status, bytes(answer.body))
            service = scope["app"].state.runtime.audit
            await run_in_threadpool(service.record, entry)
        except Exception:  # the audit must never break the answer it describes
            log.exception(
                "AUDIT RECORD LOST: %s %s -> %d, request id %s", scope["method"], scope["path"], status, request_id
            )


def _start(status: int) -> Message:
    return {"type": "http.response.start", "status": status, "headers": [(b"content-type", b"application/json")]}


def _entry(scope: Scope, request_id: str, status: int, error_body: bytes) -> AuditEntry:
    principal = scope.get("state", {}).get("principal")
    who = principal if isinstance(principal, Principal) else None
    route = scope.get("route")
    template = getattr(route, "path", None)
    return AuditEntry.of(
        request_id=request_id,
        subject=who.subject if who is not None else ANONYMOUS,
        name=who.name if who is not None else None,
        role=who.role.value if who is not None else None,
        method=str(scope["method"]),
        route=template if isinstance(template, str) else None,
        path=str(scope.get("path", "")),
        status=status,
        detail=error_detail(error_body) if status >= 400 else None,
    )


def error_detail(body: bytes) -> str | None:
    """The `detail` of a JSON error answer: its text, or for a 422 its `field: message` lines. Never the `input`
    FastAPI echoes in a 422: that is the caller's data, which may hold a secret."""
    try:
        payload: Any = json.loads(body)
    except ValueError:
        return None
    detail = payload.get("detail") if isinstance(payload, dict) else None
    if isinstance(detail, str):
        return detail
    if isinstance(detail, list):
        return "; ".join(_validation_item(item) for item in detail) or None
    return None


def _validation_item(item: Any) -> str:
    if not isinstance(item, dict):
        return "invalid"
    return describe_error(item, skip=REQUEST_PARTS, root="(request)")
