"""Authentication: a bearer token (or an OIDC JWT) becomes the `Principal` a request acts as; tokens are created,
listed and revoked here.

A token's secret is returned once, when it is created, and never stored: the store keeps its sha256, looked up
through a unique index (the secret has 256 bits of entropy, so a fast digest is the right tool; a password hash
would cost tens of milliseconds on every request - docs/decisions/0006). This module never logs a secret and
never says whether a token it refuses ever existed beyond "unknown", "expired" or "revoked".
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any, Protocol

from control_plane.domain.errors import Forbidden, InvalidInput, NotFound, Unauthenticated
from control_plane.domain.identity import ApiToken, Principal, Role
from control_plane.services.ports import Clock

TOKEN_PREFIX = "edge_"  # noqa: S105 (marks our tokens apart from JWTs; not a secret)
MAX_CREDENTIAL_CHARS = 8192  # a header longer than this is refused before any work
MIN_BOOTSTRAP_CHARS = 32
TOUCH_EVERY = timedelta(seconds=60)  # last_used_at is written at most this often per token
NEEDS_TOKEN = "this operation needs a bearer token (Authorization: Bearer TOKEN)"  # noqa: S105 (a message)


class TokenStore(Protocol):
    def add(self, token: ApiToken) -> ApiToken: ...
    def by_digest(self, digest: str) -> ApiToken | None: ...
    def get(self, token_id: str) -> ApiToken | None: ...
    def list(self) -> list[ApiToken]: ...
    def count(self) -> int: ...
    def revoke(self, token_id: str, at: datetime) -> None: ...
    def touch(self, token_id: str, at: datetime) -> None: ...


class JwtVerifier(Protocol):
    """Checks a JWT's signature (the issuer's JWKS), issuer, audience and expiry; returns its claims or raises
    `ValueError` with the reason."""

    def verify(self, token: str) -> Mapping[str, Any]: ...


class ClaimRoles(Protocol):
    """Maps an OIDC identity's claims to a role, or None when no claim value is mapped."""

    def role_of(self, claims: Mapping[str, Any]) -> Role | None: ...


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_secret() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


class IdentityService:
    def __init__(
        self,
        store: TokenStore,
        clock: Clock,
        jwt: JwtVerifier | None = None,
        claim_roles: ClaimRoles | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._jwt = jwt
        self._claim_roles = claim_roles

    def now(self) -> datetime:
        return self._clock()

    # -- authentication ----------------------------------------------------------------------------------------

    def authenticate(self, authorization: str | None) -> Principal:
        """The principal an `Authorization` header names; `Unauthenticated` with the reason otherwise."""
        credential = _bearer(authorization)
        if self._jwt is not None and credential.count(".") == 2 and not credential.startswith(TOKEN_PREFIX):
            return self._from_jwt(credential)
        token = self._store.by_digest(digest(credential))
        if token is None:
            raise Unauthenticated("unknown token")
        now = self._clock()
        refusal = token.refusal(now)
        if refusal is not None:
            raise Unauthenticated(refusal)
        if token.last_used_at is None or now - token.last_used_at >= TOUCH_EVERY:
            self._store.touch(token.id, now)
        return token.principal()

    def _from_jwt(self, credential: str) -> Principal:
        assert self._jwt is not None
        try:
            claims = self._jwt.verify(credential)
        except ValueError as exc:
            raise Unauthenticated(f"single sign-on token refused: {exc}") from exc
        subject = str(claims.get("sub") or "")
        if not subject:
            raise Unauthenticated("single sign-on token refused: no 'sub' claim")
        role = self._claim_roles.role_of(claims) if self._claim_roles is not None else None
        name = str(claims.get("preferred_username") or claims.get("email") or subject)[:128]
        if role is None:
            raise Forbidden(f"{name} signed in, but none of their roles is mapped to a control-plane role")
        return Principal(subject=f"oidc:{subject}"[:256], name=name, role=role)

    # -- tokens ------------------------------------------------------------------------------------------------

    def create_token(
        self,
        name: str,
        role: Role,
        created_by: str,
        expires_at: datetime | None = None,
        device_id: str | None = None,
    ) -> tuple[ApiToken, str]:
        """A new token and its secret (shown once)."""
        if (role is Role.DEVICE) != (device_id is not None):
            raise InvalidInput("device_id: a device token names its device, and only a device token does")
        now = self._clock()
        if expires_at is not None and expires_at <= now:
            raise InvalidInput("expires_at: must be in the future")
        secret = new_secret()
        token = ApiToken(
            id=uuid.uuid4().hex[:16],
            name=name,
            role=role,
            digest=digest(secret),
            created_at=now,
            created_by=created_by,
            expires_at=expires_at,
            revoked_at=None,
            last_used_at=None,
            device_id=device_id,
        )
        return self._store.add(token), secret

    def list_tokens(self) -> list[ApiToken]:
        return self._store.list()

    def revoke(self, token_id: str) -> ApiToken:
        token = self._store.get(token_id)
        if token is None:
            raise NotFound(f"no token {token_id!r}")
        if token.revoked_at is None:
            now = self._clock()
            self._store.revoke(token_id, now)
            token = replace(token, revoked_at=now)
        return token

    def bootstrap(self, given: str | None) -> str | None:
        """On first start (no token at all): make `given` the first admin token, or create one.

        Returns the secret to write down when one was created here; None when tokens exist or `given` was used.
        """
        if self._store.count():
            return None
        if given is not None:
            if len(given) < MIN_BOOTSTRAP_CHARS:
                raise InvalidInput(f"bootstrap token: at least {MIN_BOOTSTRAP_CHARS} characters")
            self._store.add(_admin(digest(given), self._clock()))
            return None
        secret = new_secret()
        self._store.add(_admin(digest(secret), self._clock()))
        return secret


def _admin(token_digest: str, now: datetime) -> ApiToken:
    return ApiToken(
        id=uuid.uuid4().hex[:16],
        name="bootstrap-admin",
        role=Role.ADMIN,
        digest=token_digest,
        created_at=now,
        created_by="bootstrap",
        expires_at=None,
        revoked_at=None,
        last_used_at=None,
    )


def _bearer(authorization: str | None) -> str:
    if not authorization:
        raise Unauthenticated(NEEDS_TOKEN)
    if len(authorization) > MAX_CREDENTIAL_CHARS:
        raise Unauthenticated("credential too long")
    scheme, _, credential = authorization.strip().partition(" ")
    credential = credential.strip()
    if scheme.lower() != "bearer" or not credential or " " in credential:
        raise Unauthenticated("expected 'Authorization: Bearer TOKEN'")
    return credential
