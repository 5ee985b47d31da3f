"""Registering builders: an administrator vouches that a builder identity runs on given GPU hardware, so the
control plane will accept from it the TensorRT plans it cannot re-prove itself (docs/builds.md "Whose word").

Registering creates the builder's token (role `builder`) through the identity service and binds its identity to
the hardware; the token's secret is returned once, here, and never stored. This module never grants anything but
the `builder` role, and never registers an identity it did not create.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from control_plane.domain.build_trust import BuilderRegistration, valid_compute_capability, valid_tensorrt_pattern
from control_plane.domain.errors import InvalidInput
from control_plane.domain.identity import ApiToken, Principal, Role
from control_plane.services.ports import BuildStore, Clock
from model_builds.catalog import Catalog


class TokenIssuer(Protocol):
    """`IdentityService.create_token`."""

    def create_token(
        self,
        name: str,
        role: Role,
        created_by: str,
        expires_at: datetime | None = None,
        device_id: str | None = None,
    ) -> tuple[ApiToken, str]: ...


@dataclass(frozen=True)
class RegisteredBuilder:
    registration: BuilderRegistration
    token: ApiToken
    secret: str  # shown once


class BuilderRegistryService:
    def __init__(self, store: BuildStore, tokens: TokenIssuer, catalog: Catalog, clock: Clock) -> None:
        self._store = store
        self._tokens = tokens
        self._catalog = catalog
        self._clock = clock

    def register(
        self, name: str, compute_capability: str, tensorrt: str, gpu_class: str | None, by: Principal
    ) -> RegisteredBuilder:
        """A new builder identity (and its token) allowed to deliver plans for this hardware."""
        if not valid_compute_capability(compute_capability):
            raise InvalidInput(f"compute_capability: {compute_capability!r} is not MAJOR.MINOR (e.g. 8.7)")
        if not valid_tensorrt_pattern(tensorrt):
            raise InvalidInput(f"tensorrt: {tensorrt!r} is not a TensorRT release or pattern (10.3.0, 10.3, 10.x)")
        if gpu_class is not None:
            target = self._catalog.get(gpu_class)
            if target is None:
                raise InvalidInput(f"gpu_class: unknown GPU class {gpu_class!r} (see GET /v1/targets)")
            if compute_capability not in target.compute_capabilities:
                raise InvalidInput(
                    f"gpu_class: {gpu_class} has compute capabilities {list(target.compute_capabilities)}, "
                    f"not {compute_capability}"
                )
        token, secret = self._tokens.create_token(name, Role.BUILDER, created_by=by.subject)
        registration = BuilderRegistration(
            subject=token.principal().subject,
            name=name,
            compute_capability=compute_capability,
            tensorrt=tensorrt,
            gpu_class=gpu_class,
            created_by=by.subject,
            created_at=self._clock(),
        )
        return RegisteredBuilder(self._store.save_registration(registration), token, secret)

    def registrations(self) -> list[BuilderRegistration]:
        return self._store.list_registrations()
