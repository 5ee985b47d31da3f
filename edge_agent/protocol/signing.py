"""ed25519 signing of desired-state documents (and build manifests).

The control plane holds the private key; agents pin the public key from their config and refuse anything that
does not verify. Keys travel as base64 of the raw 32 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import ValidationError

from edge_agent.protocol.messages import DesiredState, SignedDesiredState


class SignatureError(ValueError):
    """A document whose signature is missing, malformed, from another key, or does not match."""


def canonical_json(data: Any) -> str:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _key_id(public_raw: bytes) -> str:
    return hashlib.sha256(public_raw).hexdigest()[:16]


class Signer:
    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.public_key_b64 = base64.b64encode(raw).decode()
        self.key_id = _key_id(raw)

    @classmethod
    def generate(cls) -> Signer:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, pem: bytes) -> Signer:
        key = serialization.load_pem_private_key(pem, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise SignatureError("the signing key file does not hold an ed25519 private key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def sign(self, data: bytes) -> str:
        return base64.b64encode(self._key.sign(data)).decode()

    def sign_desired(self, document: DesiredState) -> SignedDesiredState:
        text = canonical_json(document.model_dump(mode="json"))
        return SignedDesiredState(document=text, signature=self.sign(text.encode()), key_id=self.key_id)


def valid_public_key(value: str) -> str:
    """`value` when it is a base64 raw ed25519 public key; else SignatureError (a ValueError, so a pydantic validator
    can return this directly)."""
    Verifier(value)
    return value


class Verifier:
    def __init__(self, public_key_b64: str) -> None:
        try:
            raw = base64.b64decode(public_key_b64, validate=True)
            self._key = Ed25519PublicKey.from_public_bytes(raw)
        except (ValueError, TypeError) as exc:
            raise SignatureError(f"not a base64 ed25519 public key: {exc}") from exc
        self.key_id = _key_id(raw)

    def verify(self, data: bytes, signature_b64: str) -> None:
        try:
            signature = base64.b64decode(signature_b64, validate=True)
            self._key.verify(signature, data)
        except (InvalidSignature, ValueError) as exc:
            raise SignatureError("signature does not verify against the pinned control-plane key") from exc

    def verify_desired(self, signed: SignedDesiredState) -> DesiredState:
        """The verified document, or SignatureError; a well-signed but malformed document is refused too."""
        if signed.key_id != self.key_id:
            raise SignatureError(f"signed by key {signed.key_id}, but this agent pins key {self.key_id}")
        self.verify(signed.document.encode(), signed.signature)
        try:
            return DesiredState.model_validate_json(signed.document)
        except ValidationError as exc:
            raise SignatureError(f"signed document is not a valid DesiredState: {exc.errors()[0]['msg']}") from exc
