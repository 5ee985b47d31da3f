"""Cutting a page from what a store read with one row more than the page (domain/paging.py)."""

from __future__ import annotations

import pytest

from control_plane.domain.paging import MAX_LIMIT, Page, check_limit, page_of


@pytest.mark.parametrize(
    ("found", "limit", "expected"),
    [
        pytest.param(["a", "b", "c"], 2, Page(("a", "b"), "b"), id="more-than-a-page"),
        pytest.param(["a", "b"], 2, Page(("a", "b"), None), id="exactly-a-page-is-the-last"),
        pytest.param(["a"], 2, Page(("a",), None), id="short-page"),
        pytest.param([], 2, Page((), None), id="empty"),
    ],
)
def test_a_page_names_a_next_cursor_only_when_there_is_more(found: list[str], limit: int, expected: Page[str]) -> None:
    assert page_of(found, limit, lambda item: item) == expected


@pytest.mark.parametrize("limit", [pytest.param(0, id="zero"), pytest.param(MAX_LIMIT + 1, id="above-max")])
def test_a_limit_out_of_bounds_is_misuse(limit: int) -> None:
    with pytest.raises(ValueError, match="limit must be from 1 to"):
        check_limit(limit)
