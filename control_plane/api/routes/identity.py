"""Tokens (create, list, revoke; admin only) and `GET /v1/whoami` (any identity)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from control_plane.api.deps import IdentityDep, PrincipalDep
from control_plane.api.schemas.base import with_fields
from control_plane.api.schemas.identity import TokenCreatedOut, TokenIn, TokenOut, WhoAmIOut
from control_plane.domain.identity import ROLE_PERMISSIONS

router = APIRouter(tags=["identity"])


@router.get("/v1/whoami")
def whoami(principal: PrincipalDep) -> WhoAmIOut:
    held = sorted(p.value for p in ROLE_PERMISSIONS.get(principal.role, frozenset()))
    return WhoAmIOut.model_validate(with_fields(principal, permissions=held))


@router.post("/v1/tokens", status_code=201)
def create_token(body: TokenIn, principal: PrincipalDep, identity: IdentityDep) -> TokenCreatedOut:
    """A new token; its secret is in this answer only."""
    expires_at = identity.now() + timedelta(seconds=body.expires_in_s) if body.expires_in_s else None
    token, secret = identity.create_token(body.name, body.role, principal.subject, expires_at, body.device_id)
    return TokenCreatedOut.model_validate(with_fields(token, token=secret))


@router.get("/v1/tokens")
def list_tokens(identity: IdentityDep) -> list[TokenOut]:
    return [TokenOut.model_validate(t) for t in identity.list_tokens()]


@router.post("/v1/tokens/{token_id}/revoke")
def revoke_token(token_id: str, identity: IdentityDep) -> TokenOut:
    """Revoked at once: the next request with it is refused. Revoking twice is not an error."""
    return TokenOut.model_validate(identity.revoke(token_id))
