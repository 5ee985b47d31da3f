"""`GET /v1/devices` at fleet size (decision 0013): the body is still a JSON array; `limit` and `cursor` page it
and the next page's URL comes in `Link: <...>; rel="next"` (absent on the last page); the selector is applied by
the server. Against the real control plane; each test's devices carry a label of their own."""

from __future__ import annotations

import uuid

import httpx
import pytest

pytestmark = pytest.mark.integration


def enrolled_fleet(api: httpx.Client, count: int) -> tuple[str, list[str]]:
    """`count` devices labelled `batch=<new id>`; the selector naming them, and their ids in order."""
    batch = uuid.uuid4().hex[:10]
    ids = [f"page-{batch}-{n}" for n in range(count)]
    for n, device_id in enumerate(ids):
        labels = {"batch": batch, "half": "low" if n < count // 2 else "high"}
        answer = api.put(f"/v1/devices/{device_id}/enrollment", json={"channel": "mqtt", "labels": labels})
        assert answer.status_code == 200, answer.text
    return f"batch={batch}", ids


def follow(api: httpx.Client, first: httpx.Response) -> list[list[str]]:
    """The ids of every page, following `Link: rel="next"` from `first`."""
    pages, answer = [], first
    while True:
        assert answer.status_code == 200, answer.text
        pages.append([d["id"] for d in answer.json()])
        if "next" not in answer.links:
            return pages
        answer = api.get(answer.links["next"]["url"])


def test_pages_follow_the_link_header_until_the_last_page(api: httpx.Client) -> None:
    selector, ids = enrolled_fleet(api, 5)
    first = api.get("/v1/devices", params={"selector": selector, "limit": 2})
    assert first.links["next"]["url"].startswith(str(api.base_url))
    assert follow(api, first) == [ids[0:2], ids[2:4], ids[4:5]]
    whole = api.get("/v1/devices", params={"selector": selector})
    assert [d["id"] for d in whole.json()] == ids and "link" not in whole.headers


def test_a_page_that_ends_the_list_exactly_has_no_next_link(api: httpx.Client) -> None:
    selector, ids = enrolled_fleet(api, 4)
    assert follow(api, api.get("/v1/devices", params={"selector": selector, "limit": 2})) == [ids[0:2], ids[2:4]]


def test_the_selector_is_kept_across_pages(api: httpx.Client) -> None:
    selector, ids = enrolled_fleet(api, 6)
    first = api.get("/v1/devices", params={"selector": f"{selector},half=high", "limit": 2})
    assert follow(api, first) == [ids[3:5], ids[5:6]]


def test_a_cursor_whose_device_was_forgotten_still_pages_on(api: httpx.Client) -> None:
    selector, ids = enrolled_fleet(api, 4)
    first = api.get("/v1/devices", params={"selector": selector, "limit": 2})
    assert api.delete(f"/v1/devices/{ids[1]}").status_code == 204  # the device the next cursor names
    assert follow(api, first) == [ids[0:2], ids[2:4]]


@pytest.mark.parametrize(
    ("params", "field"),
    [
        pytest.param({"limit": 0}, "limit", id="limit-zero"),
        pytest.param({"limit": 1001}, "limit", id="limit-above-1000"),
        pytest.param({"limit": "many"}, "limit", id="limit-not-a-number"),
        pytest.param({"cursor": "x" * 129}, "cursor", id="cursor-too-long"),
    ],
)
def test_page_parameters_out_of_bounds_are_refused(api: httpx.Client, params: dict[str, object], field: str) -> None:
    answer = api.get("/v1/devices", params=params)
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", field]
