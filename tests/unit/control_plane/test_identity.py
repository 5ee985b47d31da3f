"""Tokens against a real SQLite store: what a stolen, expired, revoked or guessed credential does NOT get."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from control_plane.adapters.db.engine import make_engine, migrate
from control_plane.adapters.db.identity_repository import TokenRepository
from control_plane.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from control_plane.domain.identity import Role, role_from_claims
from control_plane.services.identity import IdentityService


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cp.db"


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def identity(db: Path, clock: Clock) -> IdentityService:
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    return IdentityService(TokenRepository(engine), clock)


def bearer(secret: str) -> str:
    return f"Bearer {secret}"


def test_a_created_token_authenticates_as_its_role(identity: IdentityService) -> None:
    token, secret = identity.create_token("ci", Role.OPERATOR, "token:admin")
    principal = identity.authenticate(bearer(secret))
    assert (principal.subject, principal.name, principal.role) == (f"token:{token.id}", "ci", Role.OPERATOR)


def test_only_a_digest_is_stored(identity: IdentityService, db: Path) -> None:
    _token, secret = identity.create_token("ci", Role.ADMIN, "token:admin")
    dump = "\n".join(sqlite3.connect(db).iterdump())
    assert secret not in dump
    assert secret[8:24] not in dump


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        pytest.param(None, "needs a bearer token", id="none"),
        pytest.param("", "needs a bearer token", id="empty"),
        pytest.param("Basic dXNlcjpwYXNz", "expected 'Authorization: Bearer TOKEN'", id="basic-auth"),
        pytest.param("Bearer", "expected 'Authorization: Bearer TOKEN'", id="no-credential"),
        pytest.param("Bearer a b", "expected 'Authorization: Bearer TOKEN'", id="two-credentials"),
        pytest.param("Bearer edge_guessed", "unknown token", id="guessed"),
        pytest.param("Bearer " + "x" * 9000, "credential too long", id="huge"),
    ],
)
def test_malformed_or_unknown_credentials_are_nobody(
    identity: IdentityService, header: str | None, reason: str
) -> None:
    with pytest.raises(Unauthenticated, match=reason):
        identity.authenticate(header)


def test_an_expired_token_is_refused_from_its_expiry_on(identity: IdentityService, clock: Clock) -> None:
    _token, secret = identity.create_token("short", Role.VIEWER, "t", expires_at=clock.now + timedelta(hours=1))
    clock.now += timedelta(minutes=59)
    assert identity.authenticate(bearer(secret)).role is Role.VIEWER
    clock.now += timedelta(minutes=1)
    with pytest.raises(Unauthenticated, match="token expired"):
        identity.authenticate(bearer(secret))


def test_a_revoked_token_is_refused_at_once_and_others_keep_working(identity: IdentityService) -> None:
    stolen, stolen_secret = identity.create_token("laptop", Role.OPERATOR, "t")
    _other, other_secret = identity.create_token("ci", Role.OPERATOR, "t")
    identity.revoke(stolen.id)
    with pytest.raises(Unauthenticated, match="token revoked"):
        identity.authenticate(bearer(stolen_secret))
    assert identity.authenticate(bearer(other_secret)).name == "ci"
    assert identity.revoke(stolen.id).revoked_at is not None  # revoking twice is not an error
    with pytest.raises(NotFound):
        identity.revoke("nope")


def test_last_use_is_recorded_at_most_once_a_minute(identity: IdentityService, clock: Clock) -> None:
    token, secret = identity.create_token("ci", Role.VIEWER, "t")
    identity.authenticate(bearer(secret))
    first = identity.list_tokens()[0].last_used_at
    clock.now += timedelta(seconds=30)
    identity.authenticate(bearer(secret))
    assert identity.list_tokens()[0].last_used_at == first
    clock.now += timedelta(seconds=31)
    identity.authenticate(bearer(secret))
    assert identity.list_tokens()[0].last_used_at == clock.now
    assert token.id == identity.list_tokens()[0].id


@pytest.mark.parametrize(
    ("role", "device_id"),
    [
        pytest.param(Role.DEVICE, None, id="device-token-without-device"),
        pytest.param(Role.OPERATOR, "dev-1", id="operator-token-bound-to-device"),
    ],
)
def test_device_tokens_and_only_they_name_a_device(
    identity: IdentityService, role: Role, device_id: str | None
) -> None:
    with pytest.raises(InvalidInput, match="device_id"):
        identity.create_token("x", role, "t", device_id=device_id)


def test_a_device_token_acts_as_its_device(identity: IdentityService) -> None:
    _token, secret = identity.create_token("agent", Role.DEVICE, "t", device_id="dev-7")
    principal = identity.authenticate(bearer(secret))
    assert (principal.role, principal.device_id) == (Role.DEVICE, "dev-7")


def test_bootstrap_creates_one_admin_once(identity: IdentityService) -> None:
    secret = identity.bootstrap(None)
    assert secret is not None
    assert identity.authenticate(bearer(secret)).role is Role.ADMIN
    assert identity.bootstrap(None) is None
    assert identity.bootstrap("edge_" + "z" * 40) is None  # tokens exist: a given one is not added later
    with pytest.raises(Unauthenticated):
        identity.authenticate(bearer("edge_" + "z" * 40))


def test_bootstrap_takes_a_given_token_and_refuses_a_short_one(identity: IdentityService) -> None:
    with pytest.raises(InvalidInput, match="at least 32"):
        identity.bootstrap("short")
    given = "edge_" + "g" * 40
    assert identity.bootstrap(given) is None
    assert identity.authenticate(bearer(given)).role is Role.ADMIN


@pytest.mark.parametrize(
    ("claims", "role"),
    [
        pytest.param({"groups": ["edge-viewers", "edge-admins"]}, Role.ADMIN, id="strongest-wins"),
        pytest.param({"groups": "edge-ops"}, Role.OPERATOR, id="single-string"),
        pytest.param({"groups": ["other"]}, None, id="unmapped"),
        pytest.param({"groups": 3}, None, id="not-a-list"),
        pytest.param({}, None, id="absent"),
    ],
)
def test_sso_claims_map_to_the_strongest_role(claims: dict[str, object], role: Role | None) -> None:
    mapping = {"edge-viewers": Role.VIEWER, "edge-ops": Role.OPERATOR, "edge-admins": Role.ADMIN}
    assert role_from_claims(claims, "groups", mapping) is role


class _Jwt:
    def __init__(self, claims: dict[str, object] | None) -> None:
        self.claims = claims

    def verify(self, token: str) -> dict[str, object]:
        if self.claims is None:
            raise ValueError("Signature verification failed")
        return self.claims

    def role_of(self, claims: dict[str, object]) -> Role | None:
        return role_from_claims(claims, "groups", {"edge-ops": Role.OPERATOR})


def test_an_sso_user_without_a_mapped_role_is_known_but_forbidden(db: Path, clock: Clock) -> None:
    engine = make_engine(f"sqlite:///{db}")
    migrate(engine)
    jwt = _Jwt({"sub": "u1", "preferred_username": "ana", "groups": ["sales"]})
    service = IdentityService(TokenRepository(engine), clock, jwt=jwt, claim_roles=jwt)
    with pytest.raises(Forbidden, match="ana"):
        service.authenticate("Bearer a.b.c")
    jwt.claims = None
    with pytest.raises(Unauthenticated, match="Signature verification failed"):
        service.authenticate("Bearer a.b.c")
