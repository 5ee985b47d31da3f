"""Single sign-on: verify a JWT from the configured OIDC issuer with PyJWT against the issuer's JWKS.

The only module that imports `jwt`. Keys are fetched from `jwks_url` and cached; a token whose `kid` is unknown
makes PyJWT refetch the set once (key rotation). Signature, issuer, audience, expiry and not-before are all
checked; algorithms are an explicit allow-list (never `none`, never a symmetric one chosen by the token).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jwt

from control_plane.domain.identity import Role, role_from_claims
from control_plane.settings import OidcSettings

LEEWAY_S = 30  # clock skew tolerated between the issuer and this host


class OidcVerifier:
    def __init__(self, settings: OidcSettings) -> None:
        assert settings.jwks_url is not None and settings.issuer is not None and settings.audience is not None
        self._settings = settings
        self._jwks = jwt.PyJWKClient(settings.jwks_url, cache_keys=True, lifespan=300, timeout=5)

    def verify(self, token: str) -> Mapping[str, Any]:
        try:
            key = self._jwks.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=list(self._settings.algorithms),
                audience=self._settings.audience,
                issuer=self._settings.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.PyJWTError as exc:
            raise ValueError(str(exc) or type(exc).__name__) from exc
        return claims

    def role_of(self, claims: Mapping[str, Any]) -> Role | None:
        return role_from_claims(claims, self._settings.roles_claim, self._settings.role_map)
