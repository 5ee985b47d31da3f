"""Views of who may do what: API tokens, enrollment tokens and enrollments, broker credentials and accounts,
revocations, and the audit log with its chain check.

Pure functions from JSON data (docs/api.md) to renderables: no I/O, no client calls. A secret the server shows once
(a token, a broker password) is printed with a line saying so.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text

from control_plane.cli.views.cells import cell, record, status_text, table


def whoami_view(data: Any) -> RenderableType:
    return record("who am I", data, ["name", "role", "subject", "device_id", "permissions"])


def tokens_view(data: Any) -> RenderableType:
    columns = ["id", "name", "role", "device", "created", "by", "expires", "revoked", "last used"]
    keys = ["id", "name", "role", "device_id", "created_at", "created_by", "expires_at", "revoked_at", "last_used_at"]
    return table("tokens", columns, ([cell(t.get(k)) for k in keys] for t in data))


def token_created_view(data: Any) -> RenderableType:
    shown = record("token created", data, ["id", "name", "role", "device_id", "expires_at"])
    return Group(shown, Text("token (shown once, store it now): ", style="bold") + Text(cell(data.get("token"))))


def broker_credential_view(data: Any) -> RenderableType:
    shown = record("broker credentials", data, ["device_id", "username", "client_id"])
    password = Text("password (shown once, put it in the agent's mqtt.password now): ", style="bold")
    return Group(shown, password + Text(cell(data.get("password"))))


def revocation_view(data: Any) -> RenderableType:
    broker = {"dynsec": "client deleted, disconnected", "none": "not administered here: not told"}
    shown = dict(data) | {"broker": broker.get(str(data.get("broker")), data.get("broker"))}
    return record(f"revoked {data.get('device_id')}", shown, ["broker", "tokens_revoked"])


def broker_view(data: Any) -> RenderableType:
    last = data.get("last_reconcile") or {}
    shown = {
        "admin": data.get("admin"),
        "last reconcile": data.get("last_reconcile_at"),
        "last error": data.get("last_error"),
    }
    return Group(record("broker accounts", shown), reconcile_view(last) if last else Text(""))


def reconcile_view(data: Any) -> RenderableType:
    if not data.get("administered", True):
        return Text("the broker is not administered by this control plane (mqtt.admin: none): nothing to reconcile")
    return record("reconcile", data)


def token_view(data: Any) -> RenderableType:
    return record("token", data)


_ENROLLMENT_TOKEN_KEYS = ["id", "name", "auto_approve", "labels", "channel", "gpu_class", "uses", "max_uses"]


def enrollment_tokens_view(data: Any) -> RenderableType:
    columns = ["id", "name", "auto-approve", "labels", "channel", "gpu class", "uses", "max", "expires", "revoked"]
    keys = [*_ENROLLMENT_TOKEN_KEYS, "expires_at", "revoked_at"]
    return table("enrollment tokens", columns, ([cell(t.get(k)) for k in keys] for t in data))


def enrollment_token_created_view(data: Any) -> RenderableType:
    shown = record("enrollment token created", data, [*_ENROLLMENT_TOKEN_KEYS, "expires_at"])
    secret = Text("token (shown once; give it to `edge-agent enroll --token`): ", style="bold")
    return Group(shown, secret + Text(cell(data.get("token"))))


def enrollment_token_view(data: Any) -> RenderableType:
    return record("enrollment token", data)


def enrollments_view(data: Any) -> RenderableType:
    columns = ["device", "status", "key", "requested key", "requested", "with token", "gpu class", "decided by"]
    keys = ["device_id", "status", "key", "requested_key", "requested_at", "requested_with", "gpu_class", "decided_by"]
    rows: list[list[RenderableType]] = [
        [status_text(e.get(k)) if k == "status" else cell(e.get(k)) for k in keys] for e in data
    ]
    return table("enrollments", columns, rows)


def enrollment_view(data: Any) -> RenderableType:
    return record(f"enrollment of {data.get('device_id')}", data)


def audit_view(data: Any) -> RenderableType:
    columns = ["seq", "at", "who", "role", "method", "path", "status", "outcome", "request id"]
    return table(
        "audit log",
        columns,
        (
            [
                cell(r.get("seq")),
                cell(r.get("at")),
                cell(r.get("name") or r.get("subject")),
                cell(r.get("role")),
                cell(r.get("method")),
                cell(r.get("path")),
                cell(r.get("status")),
                status_text(r.get("outcome")),
                cell(r.get("request_id")),
            ]
            for r in data
        ),
    )


def audit_verify_view(data: Any) -> RenderableType:
    if data.get("intact"):
        head = f" (last: seq {data.get('last_seq')}, hash {data.get('last_hash')})" if data.get("last_seq") else ""
        return Text(f"{data.get('records')} records, chain intact{head}", style="green")
    return Text(
        f"chain broken at seq {data.get('broken_seq')}: that record was changed, or one before it was removed or "
        f"moved ({data.get('records')} records checked before it)",
        style="bold red",
    )
