"""How a pydantic validation error is told to a person, written once for every boundary.

A refusal names the field that is wrong and what is wrong with it ("models.0.version: Input should be ...").
The agent's config, the wire contract, the REST API, the CLI and the build catalog all say it the same way.
This module must never import anything of the project.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

# Where FastAPI says a request's field came from; a person cares about the field, not the part of the request.
REQUEST_PARTS = frozenset({"body", "query", "path", "header", "cookie"})


def error_location(error: Mapping[str, Any], *, skip: Iterable[str] = (), root: str = "(root)") -> str:
    """The dotted path of one pydantic error ("models.0.version"), leaving out the parts named in `skip`."""
    left_out = frozenset(skip)
    parts = [str(part) for part in error.get("loc", ()) if part not in left_out]
    return ".".join(parts) or root


def describe_error(error: Mapping[str, Any], *, skip: Iterable[str] = (), root: str = "(root)") -> str:
    """ "where: what" for one pydantic error."""
    return f"{error_location(error, skip=skip, root=root)}: {error.get('msg', 'invalid')}"
