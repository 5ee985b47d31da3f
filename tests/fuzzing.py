"""Settings shared by the fuzz tests (`pytest -m fuzz`): deterministic, no example database, bounded in count.

CI runs each fuzz test with the small example counts written in the tests, derandomized so that a run is
reproducible and a failure found in CI is found again locally. To fuzz longer, raise the count for every fuzz test
at once: `EDGE_FUZZ_EXAMPLES=2000 .venv/bin/pytest -m fuzz` (and `EDGE_FUZZ_RANDOM=1` to explore new inputs
instead of the same derandomized ones).
"""

from __future__ import annotations

import os
from datetime import timedelta

from hypothesis import settings

EXAMPLES_ENV = "EDGE_FUZZ_EXAMPLES"
RANDOM_ENV = "EDGE_FUZZ_RANDOM"


def examples(ci_default: int) -> int:
    """`ci_default`, or the count in EDGE_FUZZ_EXAMPLES when it is set (for longer local runs)."""
    raw = os.environ.get(EXAMPLES_ENV, "").strip()
    return int(raw) if raw else ci_default


def fuzz_settings(ci_examples: int, deadline: timedelta | None) -> settings:
    """Hypothesis settings of one fuzz test: `ci_examples` examples (see `examples`), derandomized, no database.

    `deadline` is the longest one example may take; None where the work is bounded otherwise (HTTP timeouts).
    """
    return settings(
        max_examples=examples(ci_examples),
        derandomize=not os.environ.get(RANDOM_ENV),
        database=None,
        deadline=deadline,
        print_blob=True,
    )
