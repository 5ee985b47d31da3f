"""The audit log's values and its hash chain: who did what, with which outcome, under which request id.

Every mutating call and every refusal becomes one `AuditRecord`. Each record's `hash` is the sha256 of its own
fields and the previous record's hash, so changing, deleting or reordering a stored record breaks the chain from
that record on, and anyone holding the records can check that with `verify_chain` - the server to list them, a
client (`edgectl audit verify`) to recompute every hash without trusting the server's arithmetic.

Pure values and decisions: no I/O, no clock reads (the caller passes `at`). A record must never carry a request
body or a header: those hold secrets (tokens, passwords); only the error `detail` the server itself wrote is kept.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any

GENESIS_HASH = "0" * 64  # the `prev_hash` of the first record
ANONYMOUS = "anonymous"  # the subject of a request that proved no identity
MAX_DETAIL_CHARS = 500
MAX_PATH_CHARS = 512
MAX_SUBJECT_CHARS = 256
MAX_NAME_CHARS = 128
MAX_METHOD_CHARS = 16
MAX_ROLE_CHARS = 16
MAX_REQUEST_ID_CHARS = 64
MAX_PAGE = 1000  # the most records one read returns
REQUEST_ID = re.compile(rf"[A-Za-z0-9._-]{{1,{MAX_REQUEST_ID_CHARS}}}")

# What the hash covers, besides `prev_hash`: every field but the hash itself. Adding a field means a new name here
# and a rule for records written before it (they must still verify), so the list is written out, not derived.
HASHED_FIELDS = (
    "seq",
    "at",
    "request_id",
    "subject",
    "name",
    "role",
    "method",
    "route",
    "path",
    "status",
    "outcome",
    "detail",
)

_READS = frozenset({"GET", "HEAD", "OPTIONS"})


class AuditOutcome(str, Enum):
    OK = "ok"  # 2xx, 3xx
    REFUSED = "refused"  # 401, 403: the caller was nobody, or not allowed
    FAILED = "failed"  # anything else: bad input, conflict, not found, a server error


def outcome_of(status: int) -> AuditOutcome:
    if status in (401, 403):
        return AuditOutcome.REFUSED
    return AuditOutcome.OK if 200 <= status < 400 else AuditOutcome.FAILED


def is_audited(method: str, status: int) -> bool:
    """Every call that may change something (any method but GET/HEAD/OPTIONS), whatever its outcome, and every
    refusal of any method. A read that was allowed is not audited: it changed nothing and would drown the log."""
    return method.upper() not in _READS or outcome_of(status) is AuditOutcome.REFUSED


def accepted_request_id(given: str | None) -> str | None:
    """A client's `X-Request-ID` when it is safe to keep and echo (1-64 of `A-Za-z0-9._-`), else None."""
    return given if given is not None and REQUEST_ID.fullmatch(given) else None


def _bounded(text: str, limit: int) -> str:
    # PostgreSQL text cannot hold NUL; a path can (`%00`). Replaced, so that such a request is still recorded.
    return text.replace("\x00", "\ufffd")[:limit]


def _bounded_or_none(text: str | None, limit: int) -> str | None:
    return None if text is None else _bounded(text, limit)


@dataclass(frozen=True)
class AuditEntry:
    """What was observed of one request; `AuditRecord` adds its place in the chain. Build it with `of`."""

    request_id: str
    subject: str
    name: str | None
    role: str | None  # a string, not a Role: a record must verify (and read) after a role is renamed or removed
    method: str
    route: str | None  # the route template (`/v1/devices/{device_id}`); None when no route matched
    path: str  # the concrete path, at most MAX_PATH_CHARS
    status: int
    detail: str | None  # the server's error detail for a status >= 400, at most MAX_DETAIL_CHARS

    @classmethod
    def of(
        cls,
        *,
        request_id: str,
        subject: str,
        name: str | None,
        role: str | None,
        method: str,
        route: str | None,
        path: str,
        status: int,
        detail: str | None,
    ) -> AuditEntry:
        """An entry with every text cut to the size the store holds (so what is stored is what was hashed)."""
        return cls(
            request_id=_bounded(request_id, MAX_REQUEST_ID_CHARS),
            subject=_bounded(subject, MAX_SUBJECT_CHARS),
            name=_bounded_or_none(name, MAX_NAME_CHARS),
            role=_bounded_or_none(role, MAX_ROLE_CHARS),
            method=_bounded(method.upper(), MAX_METHOD_CHARS),
            route=_bounded_or_none(route, MAX_PATH_CHARS),
            path=_bounded(path, MAX_PATH_CHARS),
            status=status,
            detail=_bounded_or_none(detail, MAX_DETAIL_CHARS),
        )

    @property
    def outcome(self) -> AuditOutcome:
        return outcome_of(self.status)


@dataclass(frozen=True)
class AuditRecord:
    seq: int  # 1, 2, 3, ... without gaps
    at: datetime  # UTC
    request_id: str
    subject: str
    name: str | None
    role: str | None
    method: str
    route: str | None
    path: str
    status: int
    outcome: AuditOutcome
    detail: str | None
    prev_hash: str
    hash: str

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> AuditRecord:
        """A record from its JSON form (`GET /v1/audit`); ValueError naming what is missing or malformed."""
        try:
            at = datetime.fromisoformat(str(data["at"]))
            if at.tzinfo is None:
                raise ValueError(f"audit time without a timezone: {data['at']!r}")
            return cls(
                seq=_int(data["seq"]),
                at=at,
                request_id=str(data["request_id"]),
                subject=str(data["subject"]),
                name=_str_or_none(data.get("name")),
                role=_str_or_none(data.get("role")),
                method=str(data["method"]),
                route=_str_or_none(data.get("route")),
                path=str(data["path"]),
                status=_int(data["status"]),
                outcome=AuditOutcome(data["outcome"]),
                detail=_str_or_none(data.get("detail")),
                prev_hash=str(data["prev_hash"]),
                hash=str(data["hash"]),
            )
        except KeyError as exc:
            raise ValueError(f"audit record without {exc.args[0]!r}") from exc
        except TypeError as exc:
            raise ValueError(f"malformed audit record: {exc}") from exc


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"expected an integer, got {value!r}")
    return value


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


def canonical_time(at: datetime) -> str:
    """`at` as the hash sees it: UTC, microseconds, `Z` (`2026-01-02T03:04:05.000006Z`)."""
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def hashed_fields(record: AuditRecord) -> dict[str, Any]:
    """The fields of `record` the hash covers, in their canonical JSON form."""
    fields: dict[str, Any] = {name: getattr(record, name) for name in HASHED_FIELDS}
    fields["at"] = canonical_time(record.at)
    fields["outcome"] = record.outcome.value
    return fields


def chain_hash(prev_hash: str, record_fields: Mapping[str, Any]) -> str:
    """sha256 (hex) over the canonical JSON (sorted keys, no whitespace, ASCII) of the previous hash and the
    record's fields (`hashed_fields`)."""
    document = {"prev_hash": prev_hash, "record": dict(record_fields)}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def seal(entry: AuditEntry, seq: int, at: datetime, prev_hash: str) -> AuditRecord:
    """The record that follows the one hashed `prev_hash`, at position `seq`."""
    if at.tzinfo is None:
        raise ValueError("audit times must be timezone-aware")
    unsealed = AuditRecord(
        seq=seq,
        at=at.astimezone(UTC),
        request_id=entry.request_id,
        subject=entry.subject,
        name=entry.name,
        role=entry.role,
        method=entry.method,
        route=entry.route,
        path=entry.path,
        status=entry.status,
        outcome=entry.outcome,
        detail=entry.detail,
        prev_hash=prev_hash,
        hash="",
    )
    return replace(unsealed, hash=chain_hash(prev_hash, hashed_fields(unsealed)))


def verify_chain(records: Iterable[AuditRecord], start_prev: str = GENESIS_HASH) -> int | None:
    """The seq of the first record that breaks the chain, or None when every record holds.

    `records` in seq order, starting right after the record hashed `start_prev` (the genesis hash: the whole log).
    A record breaks the chain when its own hash is not the hash of its fields, when it does not name the hash of
    the record before it (one was deleted, changed or moved), or when its seq does not follow that record's.
    Consumed lazily: a client may hand in a generator that reads page after page.
    """
    expected_prev = start_prev
    previous_seq: int | None = None
    for record in records:
        if previous_seq is not None and record.seq != previous_seq + 1:
            return record.seq
        if record.prev_hash != expected_prev:
            return record.seq
        if record.hash != chain_hash(record.prev_hash, hashed_fields(record)):
            return record.seq
        expected_prev = record.hash
        previous_seq = record.seq
    return None
