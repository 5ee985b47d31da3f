"""The one error hierarchy services raise; api/errors.py maps each kind to an HTTP status in one place.

Library errors (SQLAlchemy, onnx, paho) are wrapped into these at the boundary that sees them, so the API never
leaks a library's exception and a 500 means a bug.
"""

from __future__ import annotations


class ServiceError(Exception):
    """Base of every expected failure; the text is shown to the user as is."""


class NotFound(ServiceError):
    """An unknown name or id."""


class Conflict(ServiceError):
    """The request is well-formed but clashes with the current state."""


class InvalidInput(ServiceError):
    """The request (or an uploaded file) is malformed; nothing was changed."""


class TooLarge(InvalidInput):
    """An upload or request body past its size limit (413); what arrived of it was not kept."""


class Unavailable(ServiceError):
    """A dependency (broker, toolchain) is temporarily unusable; retrying later may work."""


class BadGateway(ServiceError):
    """A device's service could not be reached through its tunnel, or answered nothing (502); the text says why."""


class GatewayTimeout(ServiceError):
    """A device's service did not answer through its tunnel in time (504)."""


class Unauthenticated(ServiceError):
    """No credential, or one that is unknown, expired or revoked: the caller is nobody (401)."""


class Forbidden(ServiceError):
    """The caller is known but its role does not hold the permission the operation needs (403)."""
