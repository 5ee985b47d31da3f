"""The audit log over real HTTP and real SQLite (docs/api.md, "Audit log").

What an operator relies on: every change and every refusal is recorded with who, what, outcome and the request id
the caller saw; successful reads are not; the database refuses to change or remove a record; a record changed
behind its back is named by `edgectl audit verify`. What an attacker does NOT get: a secret into the log, the log
itself without the admin role, a way to edit it through SQL.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy.exc import DBAPIError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from control_plane.adapters.db.audit_repository import AuditRepository
from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.api.audit_trail import AuditTrail
from control_plane.domain.audit import GENESIS_HASH, AuditEntry, verify_chain
from control_plane.services.audit import AuditService
from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.support import EDGECTL, Mosquitto, free_port, mint_token, python_env, wait_for

pytestmark = pytest.mark.integration


def all_records(api: httpx.Client) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while True:
        page = api.get("/v1/audit", params={"after": records[-1]["seq"] if records else 0, "limit": 1000})
        assert page.status_code == 200, page.text
        records += page.json()
        if len(page.json()) < 1000:
            return records


def by_request_id(api: httpx.Client, request_id: str) -> list[dict[str, Any]]:
    return [r for r in all_records(api) if r["request_id"] == request_id]


def database(server: RunningServer) -> Path:
    return server.settings.data_dir / "control-plane.db"


def edgectl(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [EDGECTL, "--url", url, *args]
    return subprocess.run(argv, capture_output=True, text=True, env=python_env(), timeout=120)


def test_a_change_is_recorded_with_who_what_outcome_and_the_request_id(control_plane: RunningServer) -> None:
    api = control_plane.http
    me = api.get("/v1/whoami").json()
    created = api.post("/v1/tokens", json={"name": "audited-op", "role": "operator"})
    assert created.status_code == 201
    request_id = created.headers["x-request-id"]
    assert len(request_id) == 32  # none was given: the server made one

    (record,) = by_request_id(api, request_id)
    assert (record["subject"], record["name"], record["role"]) == (me["subject"], me["name"], "admin")
    assert (record["method"], record["route"], record["path"]) == ("POST", "/v1/tokens", "/v1/tokens")
    assert (record["status"], record["outcome"], record["detail"]) == (201, "ok", None)
    # The secret was in the answer; it is nowhere in the log.
    assert created.json()["token"] not in json.dumps(all_records(api))

    revoked = api.post(f"/v1/tokens/{created.json()['id']}/revoke", headers={"X-Request-ID": "ticket-4711.revoke"})
    assert revoked.headers["x-request-id"] == "ticket-4711.revoke"
    (record,) = by_request_id(api, "ticket-4711.revoke")
    assert record["route"] == "/v1/tokens/{token_id}/revoke"
    assert record["path"] == f"/v1/tokens/{created.json()['id']}/revoke"


def test_an_unsafe_client_request_id_is_replaced(control_plane: RunningServer) -> None:
    answer = control_plane.http.post("/v1/tokens/nope/revoke", headers={"X-Request-ID": "a b<script>"})
    assert answer.status_code == 404
    given = answer.headers["x-request-id"]
    assert given != "a b<script>" and len(given) == 32
    (record,) = by_request_id(control_plane.http, given)
    assert (record["outcome"], record["detail"]) == ("failed", "no token 'nope'")


def test_refusals_are_recorded_with_the_anonymous_caller_or_the_viewer(control_plane: RunningServer) -> None:
    api, url = control_plane.http, control_plane.url
    viewer_secret = mint_token(api, "viewer", "audit-viewer")
    viewer = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {viewer_secret}"}, timeout=30)
    who = viewer.get("/v1/whoami").json()

    no_token_post = httpx.post(url + "/v1/rollouts", json={}, headers={"X-Request-ID": f"r-{uuid.uuid4().hex}"})
    no_token_get = httpx.get(url + "/v1/tokens", headers={"X-Request-ID": f"r-{uuid.uuid4().hex}"})
    viewer_post = viewer.post("/v1/tokens", json={"name": "escalate", "role": "admin"})
    viewer_audit = viewer.get("/v1/audit")
    assert [a.status_code for a in (no_token_post, no_token_get, viewer_post, viewer_audit)] == [401, 401, 403, 403]

    def recorded(answer: httpx.Response) -> dict[str, Any]:
        (record,) = by_request_id(api, answer.headers["x-request-id"])
        assert record["outcome"] == "refused" and record["status"] == answer.status_code
        assert record["detail"] == answer.json()["detail"]
        return record

    anonymous_post = recorded(no_token_post)
    assert (anonymous_post["subject"], anonymous_post["name"], anonymous_post["role"]) == ("anonymous", None, None)
    # Refused before routing (AuthenticateBeforeBody never lets a body in): the path, but no route template.
    assert (anonymous_post["path"], anonymous_post["route"]) == ("/v1/rollouts", None)
    anonymous_get = recorded(no_token_get)
    assert (anonymous_get["subject"], anonymous_get["route"]) == ("anonymous", "/v1/tokens")
    # The viewer's POST is refused before its body is read, so before routing too: who, but no route template.
    for answer, route in ((viewer_post, None), (viewer_audit, "/v1/audit")):
        record = recorded(answer)
        assert (record["subject"], record["name"], record["role"], record["route"]) == (
            who["subject"],
            "audit-viewer",
            "viewer",
            route,
        )
    # The viewer got the refusal, not one record of the log.
    assert viewer_audit.json().keys() == {"detail"}
    viewer.close()


def test_successful_reads_are_not_recorded(control_plane: RunningServer) -> None:
    ids = [f"read-{uuid.uuid4().hex}" for _ in range(3)]
    for request_id, path in zip(ids, ("/v1/models", "/v1/whoami", "/v1/audit"), strict=True):
        assert control_plane.http.get(path, headers={"X-Request-ID": request_id}).status_code == 200
    assert control_plane.http.head("/healthz").headers["x-request-id"]
    logged = {r["request_id"] for r in all_records(control_plane.http)}
    assert logged.isdisjoint(ids)


def test_a_secret_in_a_refused_body_is_not_recorded(control_plane: RunningServer) -> None:
    """FastAPI's 422 echoes the offending input; the log keeps only the field and the message."""
    secret = "edge_" + uuid.uuid4().hex
    answer = control_plane.http.post("/v1/tokens", json={"name": "x", "role": secret})
    assert answer.status_code == 422 and secret in answer.text
    (record,) = by_request_id(control_plane.http, answer.headers["x-request-id"])
    assert record["outcome"] == "failed" and record["detail"].startswith("role: ")
    assert secret not in json.dumps(all_records(control_plane.http))


def test_the_database_refuses_to_change_or_remove_a_record(control_plane: RunningServer) -> None:
    control_plane.http.post("/v1/tokens/nothing/revoke")  # at least one record
    before = all_records(control_plane.http)
    db = sqlite3.connect(database(control_plane))
    try:
        for statement in ("UPDATE audit_log SET subject = 'someone-else'", "DELETE FROM audit_log"):
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                db.execute(statement)
            db.rollback()
    finally:
        db.close()
    assert all_records(control_plane.http)[: len(before)] == before
    verified = edgectl(control_plane.url, "audit", "verify")
    assert verified.returncode == 0, verified.stderr
    assert "chain intact" in verified.stdout


@pytest.fixture
def tampered_copy(control_plane: RunningServer, tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A copy of the server's database (SQLite's online backup) whose triggers are gone and one record of which was
    changed: the forger takes a refusal of theirs off their name."""
    api = control_plane.http
    for _ in range(3):
        api.post("/v1/tokens/nothing/revoke")
    refused = httpx.post(control_plane.url + "/v1/tokens", json={})
    api.post("/v1/tokens/nothing/revoke")  # a record after it
    (record,) = by_request_id(api, refused.headers["x-request-id"])

    copy_dir = tmp_path / "copy"
    copy_dir.mkdir()
    source, target = sqlite3.connect(database(control_plane)), sqlite3.connect(copy_dir / "control-plane.db")
    with target:
        source.backup(target)
        target.execute("DROP TRIGGER audit_log_no_update")
        target.execute(
            "UPDATE audit_log SET status = 200, outcome = 'ok', detail = NULL WHERE seq = ?", (record["seq"],)
        )
    source.close()
    target.close()
    yield copy_dir, record["seq"]
    shutil.rmtree(copy_dir, ignore_errors=True)


def test_a_record_changed_behind_the_logs_back_is_named(tampered_copy: tuple[Path, int], mosquitto: Mosquitto) -> None:
    copy_dir, seq = tampered_copy
    engine = make_engine(f"sqlite:///{copy_dir / 'control-plane.db'}")
    records = AuditRepository(engine).page(0, 1000)
    engine.dispose()
    assert verify_chain(records, GENESIS_HASH) == seq

    server = start_server(server_settings(mosquitto, copy_dir))
    try:
        verified = edgectl(server.url, "audit", "verify")
        as_json = edgectl(server.url, "--json", "audit", "verify")
    finally:
        server.stop()
    assert verified.returncode == 1
    assert f"chain broken at seq {seq}" in verified.stdout
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout) == {
        "intact": False,
        "broken_seq": seq,
        "records": seq - 1,
        "last_seq": None,
        "last_hash": None,
    }


def test_edgectl_audit_lists_records_and_a_viewer_is_refused(control_plane: RunningServer) -> None:
    control_plane.http.post("/v1/tokens/nothing/revoke", headers={"X-Request-ID": "cli-listed-1"})
    seq = by_request_id(control_plane.http, "cli-listed-1")[0]["seq"]
    listed = edgectl(control_plane.url, "audit", "--after", str(seq - 1), "--limit", "1")
    assert listed.returncode == 0, listed.stderr
    assert "cli-listed-1" in listed.stdout and "/v1/tokens/nothing/revoke" in listed.stdout
    viewer = mint_token(control_plane.http, "viewer", "cli-viewer")
    refused = subprocess.run(
        [EDGECTL, "--url", control_plane.url, "--token", viewer, "audit", "verify"],
        capture_output=True,
        text=True,
        env=python_env(),
        timeout=120,
    )
    assert refused.returncode == 1 and "403" in refused.stderr


def test_concurrent_writers_never_fork_the_chain(database_url: str) -> None:
    """Two stores on one database (as two control-plane processes would be), racing: every append lands, at
    consecutive seqs, and the chain holds."""
    url = database_url
    setup = make_engine(url)
    migrate(setup)
    setup.dispose()
    engines = [make_engine(url) for _ in range(2)]
    writers = [AuditRepository(engine) for engine in engines]

    def write(n: int) -> None:
        for i in range(25):
            entry = AuditEntry.of(
                request_id=f"w{n}-{i}",
                subject="token:x",
                name="x",
                role="admin",
                method="POST",
                route=None,
                path="/",
                status=200,
                detail=None,
            )
            writers[n % 2].append(entry, datetime.now(UTC))

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    records = writers[0].page(0, 1000)
    assert [r.seq for r in records] == list(range(1, 101))
    assert len({r.request_id for r in records}) == 100
    assert verify_chain(records, GENESIS_HASH) is None
    for engine in engines:
        engine.dispose()


def test_each_database_refuses_to_change_or_remove_a_record(database_url: str) -> None:
    """Migration 0007's triggers, on SQLite and on PostgreSQL: whoever connects, a record stays as it was written."""
    engine = make_engine(database_url)
    migrate(engine)
    repository = AuditRepository(engine)
    entry = AuditEntry.of(
        request_id="r-1", subject="token:x", name="x", role="admin", method="POST", route=None, path="/", status=200,
        detail=None,
    )  # fmt: skip
    written = repository.append(entry, datetime.now(UTC))
    statements = ["UPDATE audit_log SET subject = 'someone-else'", "DELETE FROM audit_log"]
    if engine.dialect.name == "postgresql":
        statements.append("TRUNCATE audit_log")  # SQLite has no TRUNCATE
    for statement in statements:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
            connection.exec_driver_sql(statement)
    assert repository.page(0, 10) == [written]
    engine.dispose()


def test_an_unhandled_error_is_answered_with_the_request_id_and_recorded(tmp_path: Path) -> None:
    async def boom(_request: Request) -> JSONResponse:
        raise RuntimeError("bug")

    engine = make_engine(f"sqlite:///{tmp_path / 'audit.db'}")
    migrate(engine)
    repository = AuditRepository(engine)

    app = Starlette(routes=[Route("/v1/things", boom, methods=["POST"])])
    app.state.runtime = type("Runtime", (), {"audit": AuditService(repository, lambda: datetime.now(UTC))})()
    app.add_middleware(AuditTrail)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, what="the test app")
        answer = httpx.post(f"http://127.0.0.1:{port}/v1/things", headers={"X-Request-ID": "boom-1"})
    finally:
        server.should_exit = True
        thread.join(timeout=30)
    assert answer.status_code == 500 and answer.headers["x-request-id"] == "boom-1"
    assert "boom-1" in answer.json()["detail"]
    (record,) = repository.page(0, 10)
    assert (record.request_id, record.status, record.outcome.value, record.route) == (
        "boom-1",
        500,
        "failed",
        "/v1/things",
    )
    engine.dispose()
