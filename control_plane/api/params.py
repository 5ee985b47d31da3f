"""Path and query parameters shared by routes, bounded as the database can hold them (`domain/bounds.py`).

A bare `version: int` accepts 2**63, which SQLite's INTEGER cannot bind: a 500 instead of a 422. Routes use these
aliases instead, so the bound is stated once.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Path, Query

from control_plane.domain.bounds import INT64_MAX

Version = Annotated[int, Path(ge=1, le=INT64_MAX, description="The version number (1, 2, ...).")]
AfterId = Annotated[int | None, Query(ge=0, le=INT64_MAX, description="Send only records with a larger id.")]
