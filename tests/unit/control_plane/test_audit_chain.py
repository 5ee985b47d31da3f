"""The audit log's hash chain and what gets recorded (control_plane/domain/audit.py), without I/O.

A chain that was changed, cut or shuffled anywhere must name the first record that no longer holds; an intact one
must verify, also from its JSON form (what `edgectl audit verify` gets over HTTP).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from control_plane.api.audit_trail import error_detail
from control_plane.api.schemas.audit import AuditRecordOut
from control_plane.domain.audit import (
    GENESIS_HASH,
    AuditEntry,
    AuditOutcome,
    AuditRecord,
    accepted_request_id,
    chain_hash,
    hashed_fields,
    is_audited,
    outcome_of,
    seal,
    verify_chain,
)

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


def entry(n: int, status: int = 200) -> AuditEntry:
    return AuditEntry.of(
        request_id=f"req-{n}",
        subject="token:abc",
        name="alice",
        role="admin",
        method="POST",
        route="/v1/rollouts/{rollout_id}/{command}",
        path=f"/v1/rollouts/r{n}/pause",
        status=status,
        detail=None if status < 400 else "rollout is not in progress",
    )


def chain(length: int = 5) -> list[AuditRecord]:
    records: list[AuditRecord] = []
    prev = GENESIS_HASH
    for n in range(1, length + 1):
        record = seal(entry(n, 200 if n % 2 else 409), n, T0 + timedelta(seconds=n), prev)
        records.append(record)
        prev = record.hash
    return records


def changed_subject(records: list[AuditRecord]) -> list[AuditRecord]:
    records[2] = replace(records[2], subject="token:someone-else")
    return records


def changed_status_rehashed(records: list[AuditRecord]) -> list[AuditRecord]:
    """The forger recomputes the changed record's own hash: the next record still names the old one."""
    forged = replace(records[2], status=201)
    records[2] = replace(forged, hash=chain_hash(forged.prev_hash, hashed_fields(forged)))
    return records


def deleted(records: list[AuditRecord]) -> list[AuditRecord]:
    del records[2]
    return records


def reordered(records: list[AuditRecord]) -> list[AuditRecord]:
    records[2], records[3] = records[3], records[2]
    return records


def first_deleted(records: list[AuditRecord]) -> list[AuditRecord]:
    return records[1:]


def time_moved(records: list[AuditRecord]) -> list[AuditRecord]:
    records[4] = replace(records[4], at=records[4].at + timedelta(microseconds=1))
    return records


@pytest.mark.parametrize(
    ("tamper", "broken"),
    [
        pytest.param(lambda r: r, None, id="intact"),
        pytest.param(changed_subject, 3, id="a-changed-field"),
        pytest.param(changed_status_rehashed, 4, id="a-changed-field-with-its-hash-recomputed"),
        pytest.param(deleted, 4, id="a-deleted-record"),
        pytest.param(first_deleted, 2, id="the-first-record-deleted"),
        pytest.param(reordered, 4, id="a-reordered-pair"),
        pytest.param(time_moved, 5, id="a-time-moved-by-a-microsecond"),
    ],
)
def test_verify_names_the_first_record_that_breaks_the_chain(
    tamper: Callable[[list[AuditRecord]], list[AuditRecord]], broken: int | None
) -> None:
    assert verify_chain(tamper(chain()), GENESIS_HASH) == broken


def test_a_chain_verifies_from_the_middle_given_the_hash_before_it() -> None:
    records = chain()
    assert verify_chain(records[2:], records[1].hash) is None
    assert verify_chain(records[2:], GENESIS_HASH) == 3


def test_an_empty_log_is_intact() -> None:
    assert verify_chain([], GENESIS_HASH) is None


def test_records_verify_from_their_json_form_as_the_api_serves_them() -> None:
    served = [json.loads(AuditRecordOut.model_validate(r).model_dump_json()) for r in chain()]
    parsed = [AuditRecord.from_mapping(d) for d in served]
    assert verify_chain(parsed, GENESIS_HASH) is None
    served[1]["detail"] = "nothing happened here"
    assert verify_chain([AuditRecord.from_mapping(d) for d in served], GENESIS_HASH) == 2


def test_whole_second_times_survive_the_json_form() -> None:
    """pydantic writes 12:00:00Z (no fraction) for a whole second; the hash uses .000000Z either way."""
    record = seal(entry(1), 1, T0.replace(microsecond=0), GENESIS_HASH)
    served = json.loads(AuditRecordOut.model_validate(record).model_dump_json())
    assert verify_chain([AuditRecord.from_mapping(served)], GENESIS_HASH) is None


def test_the_canonical_form_is_frozen() -> None:
    """Logs written today must verify with every later client: the hashed document may never change shape."""
    record = seal(entry(1), 1, T0, GENESIS_HASH)
    document = (
        '{"prev_hash":"' + GENESIS_HASH + '","record":{"at":"2026-03-01T12:00:00.123456Z","detail":null,'
        '"method":"POST","name":"alice","outcome":"ok","path":"/v1/rollouts/r1/pause","request_id":"req-1",'
        '"role":"admin","route":"/v1/rollouts/{rollout_id}/{command}","seq":1,"status":200,"subject":"token:abc"}}'
    )
    assert record.hash == hashlib.sha256(document.encode()).hexdigest()


def test_a_malformed_record_is_refused_with_the_reason() -> None:
    served = json.loads(AuditRecordOut.model_validate(chain(1)[0]).model_dump_json())
    del served["hash"]
    with pytest.raises(ValueError, match="'hash'"):
        AuditRecord.from_mapping(served)
    with pytest.raises(ValueError, match="timezone"):
        AuditRecord.from_mapping(served | {"hash": "x", "at": "2026-03-01T12:00:00"})


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        pytest.param(200, AuditOutcome.OK, id="200"),
        pytest.param(204, AuditOutcome.OK, id="204"),
        pytest.param(307, AuditOutcome.OK, id="redirect"),
        pytest.param(401, AuditOutcome.REFUSED, id="401"),
        pytest.param(403, AuditOutcome.REFUSED, id="403"),
        pytest.param(404, AuditOutcome.FAILED, id="404"),
        pytest.param(422, AuditOutcome.FAILED, id="422"),
        pytest.param(500, AuditOutcome.FAILED, id="500"),
    ],
)
def test_outcome_of_a_status(status: int, outcome: AuditOutcome) -> None:
    assert outcome_of(status) is outcome


@pytest.mark.parametrize(
    ("method", "status", "audited"),
    [
        pytest.param("POST", 201, True, id="a-change"),
        pytest.param("DELETE", 404, True, id="a-failed-change"),
        pytest.param("PUT", 401, True, id="a-refused-change"),
        pytest.param("GET", 200, False, id="a-read"),
        pytest.param("GET", 404, False, id="a-failed-read"),
        pytest.param("GET", 403, True, id="a-refused-read"),
        pytest.param("HEAD", 401, True, id="a-refused-head"),
        pytest.param("OPTIONS", 200, False, id="options"),
    ],
)
def test_what_is_audited(method: str, status: int, audited: bool) -> None:
    assert is_audited(method, status) is audited


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        pytest.param("abc-123_x.Y", True, id="plain"),
        pytest.param("a" * 64, True, id="64-chars"),
        pytest.param("a" * 65, False, id="too-long"),
        pytest.param("", False, id="empty"),
        pytest.param("abc\r\nX-Evil: 1", False, id="header-injection"),
        pytest.param("../../etc", False, id="slash"),
        pytest.param("abc\n", False, id="trailing-newline"),
    ],
)
def test_a_client_request_id_is_kept_only_when_safe(given: str, kept: bool) -> None:
    assert (accepted_request_id(given) == given) is kept


def test_no_client_request_id_keeps_none() -> None:
    assert accepted_request_id(None) is None


def test_an_entry_is_cut_to_what_the_store_holds() -> None:
    big = AuditEntry.of(
        request_id="r",
        subject="s" * 300,
        name="n" * 200,
        role="admin",
        method="post",
        route=None,
        path="/v1/devices/" + "x" * 1000 + "\x00",
        status=422,
        detail="d" * 2000,
    )
    assert (len(big.subject), len(big.name or ""), len(big.path), len(big.detail or "")) == (256, 128, 512, 500)
    assert big.method == "POST" and big.outcome is AuditOutcome.FAILED
    assert "\x00" not in AuditEntry.of(**{**big.__dict__, "path": "/a\x00b"}).path


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        pytest.param(b'{"detail": "unknown token"}', "unknown token", id="text"),
        pytest.param(
            b'{"detail": [{"loc": ["body", "role"], "msg": "Input should be admin", "input": "s3cret"}]}',
            "role: Input should be admin",
            id="validation-without-the-input",
        ),
        pytest.param(b'{"detail": "cut off', None, id="truncated"),
        pytest.param(b"Internal Server Error", None, id="not-json"),
        pytest.param(b'["detail"]', None, id="not-an-object"),
    ],
)
def test_the_detail_of_an_error_answer(body: bytes, detail: str | None) -> None:
    assert error_detail(body) == detail
