"""Pages of list routes at fleet size (decision 0013): at most `limit` items after a cursor, and whether there is
a next page.

Pure: a page is cut from what a store read with `limit + 1` rows (the extra row only says that a next page exists
and is never shown), so a page costs the page and its last item's key is the next cursor. The cursor is a key of
the ordering (a device id), opaque to clients: `id > cursor` also holds for a cursor whose item was deleted since.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Generic, TypeVar

DEFAULT_LIMIT = 500  # items per page when a client names none
MAX_LIMIT = 1000
MAX_CURSOR = 128  # characters: a device id's bound

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: str | None  # None: this is the last page


def check_limit(limit: int) -> None:
    """Misuse raises: the API bounds `limit` before a service sees it."""
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit must be from 1 to {MAX_LIMIT}, got {limit}")


def page_of(found: Sequence[T], limit: int, key: Callable[[T], str]) -> Page[T]:
    """The page of `found` (read with `limit + 1`): its first `limit` items; a next cursor when there were more."""
    shown = tuple(found[:limit])
    return Page(shown, key(shown[-1]) if len(found) > limit else None)


def time_cursor(at: datetime, key: str) -> str:
    """The cursor of an item in a newest-first list ordered by (time, key): both, so that equal times page right."""
    return f"{at.isoformat()}|{key}"


def parse_time_cursor(text: str) -> tuple[datetime, str]:
    """(time, key) of a `time_cursor`; ValueError saying what is wrong with anything else."""
    at, sep, key = text.partition("|")
    if not sep or not key:
        raise ValueError("cursor is not one this server gave out (take it from the previous page's Link header)")
    try:
        return datetime.fromisoformat(at), key
    except ValueError as exc:
        raise ValueError(f"cursor is not one this server gave out: {exc}") from exc
