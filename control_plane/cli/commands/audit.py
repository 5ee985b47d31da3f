"""`edgectl audit` (read the audit log) and `edgectl audit verify` (recompute its hash chain here, client-side).

`verify` trusts nothing the server computed: it pages through the whole log and recomputes every record's hash
with control_plane/domain/audit.py. A chain that holds proves no stored record was changed, removed or moved;
it cannot show that records were cut off the end, so it prints the last seq and hash for the operator to keep
and compare next time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import typer

from control_plane.cli import views
from control_plane.cli.client import ApiClient, CliError
from control_plane.cli.state import state_of
from control_plane.domain.audit import GENESIS_HASH, MAX_PAGE, AuditRecord, verify_chain

audit_app = typer.Typer(
    help="The audit log of every change and refusal (admin): `edgectl audit` lists it, `audit verify` checks it."
)


@audit_app.callback(invoke_without_command=True)
def audit(
    ctx: typer.Context,
    after: Annotated[int, typer.Option("--after", min=0, help="Only records after this seq.")] = 0,
    limit: Annotated[int, typer.Option("--limit", min=1, max=MAX_PAGE, help="At most this many records.")] = 100,
) -> None:
    """List audit records, oldest first: who, role, method, path, status, outcome, request id."""
    if ctx.invoked_subcommand is not None:
        return
    state = state_of(ctx)
    with state.client() as api:
        state.output.emit(api.audit(after, limit), views.audit_view)


@audit_app.command("verify")
def verify(ctx: typer.Context) -> None:
    """Fetch the whole log and recompute its hash chain here. Exit 0 when it holds, 1 naming the first broken seq."""
    state = state_of(ctx)
    with state.client() as api:
        seen = _Seen()
        broken = verify_chain(seen.track(_records(api)), GENESIS_HASH)
    result: dict[str, Any] = {
        "intact": broken is None,
        "records": seen.count if broken is None else seen.count - 1,
        "broken_seq": broken,
        "last_seq": seen.last.seq if seen.last is not None and broken is None else None,
        "last_hash": seen.last.hash if seen.last is not None and broken is None else None,
    }
    state.output.emit(result, views.audit_verify_view)
    if broken is not None:
        raise typer.Exit(1)


class _Seen:
    """Counts the records `verify_chain` pulled, and keeps the last one."""

    def __init__(self) -> None:
        self.count = 0
        self.last: AuditRecord | None = None

    def track(self, records: Iterator[AuditRecord]) -> Iterator[AuditRecord]:
        for record in records:
            self.count += 1
            self.last = record
            yield record


def _records(api: ApiClient) -> Iterator[AuditRecord]:
    """Every record, page after page, oldest first (a page is fetched only when the previous one is used up)."""
    after = 0
    while True:
        page = api.audit(after, MAX_PAGE)
        if not isinstance(page, list):
            raise CliError("GET /v1/audit: the server did not answer with a list of records")
        for data in page:
            try:
                record = AuditRecord.from_mapping(data) if isinstance(data, dict) else None
            except ValueError as exc:
                raise CliError(f"GET /v1/audit: a malformed record after seq {after}: {exc}") from exc
            if record is None:
                raise CliError(f"GET /v1/audit: a malformed record after seq {after}")
            yield record
            after = record.seq
        if len(page) < MAX_PAGE:
            return


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
