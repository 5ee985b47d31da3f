"""Sane maxima for numbers that come from outside: what a request may ask for, before anything is stored.

A number past these is refused with 422 at the edge: a float like 1e308 seconds overflows every date it is added
to (a 500 after the rollout was stored, its devices locked), and an int of 2**63 or more overflows SQLite's
INTEGER. Pure values, no I/O; every bound here is far beyond any real use.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1
MAX_DURATION_S = 30 * 24 * 3600.0  # 30 days: the longest bake, deadline or window a request may set
MAX_RATIO = 1e6

Int64 = Annotated[int, Field(ge=-(2**63), le=INT64_MAX)]
NonNegativeInt64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
VersionNumber = Annotated[int, Field(ge=1, le=INT64_MAX)]
