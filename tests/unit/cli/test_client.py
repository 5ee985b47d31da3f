"""How the REST client turns answers into errors a person can act on (httpx's in-memory transport, no network)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import httpx
import pytest

from control_plane.cli.client import ApiClient, CliError, RequestRejected, ServerUnreachable, format_detail


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param({"detail": "model 'x' not found"}, "model 'x' not found", id="string"),
        pytest.param(
            {"detail": [{"loc": ["body", "targets", 0], "msg": "unknown target", "type": "value_error"}]},
            "targets.0: unknown target",
            id="422-body",
        ),
        pytest.param(
            {"detail": [{"loc": ["query", "limit"], "msg": "too big"}, {"loc": [], "msg": "bad"}]},
            "limit: too big\n(request): bad",
            id="422-several",
        ),
        pytest.param({"detail": {"code": 7}}, '{"code": 7}', id="object"),
    ],
)
def test_format_detail(payload: object, expected: str) -> None:
    assert format_detail(payload) == expected


def _client(status: int, body: object | None = None, text: str = "") -> ApiClient:
    def answer(request: httpx.Request) -> httpx.Response:
        if body is not None:
            return httpx.Response(status, json=body)
        return httpx.Response(status, text=text)

    return ApiClient("http://cp.test", transport=httpx.MockTransport(answer))


def test_rejection_carries_the_servers_reason() -> None:
    with _client(404, {"detail": "no model named 'nope'"}) as api, pytest.raises(RequestRejected) as caught:
        api.model("nope")
    assert caught.value.status == 404
    assert caught.value.exit_code == 1
    assert str(caught.value) == "GET /v1/models/nope failed (404): no model named 'nope'"


def test_non_json_error_body_is_shown_as_text() -> None:
    with _client(502, text="bad gateway") as api, pytest.raises(RequestRejected, match="bad gateway"):
        api.models()


def test_unreachable_server_exits_2_with_the_url() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        ApiClient("http://cp.test:1", transport=httpx.MockTransport(refuse)) as api,
        pytest.raises(ServerUnreachable) as caught,
    ):
        api.health()
    assert caught.value.exit_code == 2
    assert str(caught.value).startswith("cannot reach the control plane at http://cp.test:1: ")


def test_download_writes_the_file_and_reports_progress(tmp_path: Path) -> None:
    payload = b"x" * 200_000

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=payload, headers={"content-length": str(len(payload))})

    seen: list[tuple[int, int | None]] = []
    with ApiClient("http://cp.test", transport=httpx.MockTransport(serve)) as api:
        size = api.download("/v1/artifacts/abc", tmp_path / "a.onnx", lambda d, t: seen.append((d, t)))
    assert size == len(payload)
    assert (tmp_path / "a.onnx").read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload))
    assert not (tmp_path / "a.onnx.part").exists()


def test_failed_download_leaves_no_file(tmp_path: Path) -> None:
    with _client(404, {"detail": "no artifact"}) as api, pytest.raises(RequestRejected, match="no artifact"):
        api.download("/v1/artifacts/abc", tmp_path / "a.onnx")
    assert list(tmp_path.iterdir()) == []


def test_download_whose_digest_differs_is_refused_and_not_kept(tmp_path: Path) -> None:
    payload = b"tampered bytes"

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=payload)

    expected = hashlib.sha256(b"the real artifact").hexdigest()
    with (
        ApiClient("http://cp.test", transport=httpx.MockTransport(serve)) as api,
        pytest.raises(CliError, match=f"not {expected}"),
    ):
        api.download(f"/v1/artifacts/{expected}", tmp_path / "a.onnx", expected_sha256=expected)
    assert list(tmp_path.iterdir()) == []


def test_download_with_the_right_digest_is_kept(tmp_path: Path) -> None:
    payload = b"the real artifact"

    def serve(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=payload)

    expected = hashlib.sha256(payload).hexdigest()
    with ApiClient("http://cp.test", transport=httpx.MockTransport(serve)) as api:
        api.download(f"/v1/artifacts/{expected}", tmp_path / "a.onnx", expected_sha256=expected)
    assert (tmp_path / "a.onnx").read_bytes() == payload


FLEET = [{"id": f"dev-{n}"} for n in range(5)]


def paged_fleet(seen: list[httpx.URL], next_host: str = "cp.test") -> ApiClient:
    """A control plane serving FLEET by `limit`/`cursor` with a `Link: rel="next"`, as GET /v1/devices does."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        cursor = request.url.params.get("cursor")
        limit = int(request.url.params.get("limit", "2"))
        after = [d for d in FLEET if cursor is None or d["id"] > cursor]
        page = after[:limit]
        headers = {}
        if len(after) > limit:
            following = request.url.copy_with(host=next_host).copy_set_param("cursor", page[-1]["id"])
            headers["Link"] = f'<{following}>; rel="next"'
        return httpx.Response(200, json=page, headers=headers)

    return ApiClient("http://cp.test", transport=httpx.MockTransport(answer))


@pytest.mark.parametrize(
    ("chunk_size", "at_most", "pages"),
    [
        pytest.param(2, None, [["dev-0", "dev-1"], ["dev-2", "dev-3"], ["dev-4"]], id="every-page"),
        pytest.param(None, None, [["dev-0", "dev-1"], ["dev-2", "dev-3"], ["dev-4"]], id="the-servers-page-size"),
        pytest.param(10, None, [["dev-0", "dev-1", "dev-2", "dev-3", "dev-4"]], id="one-chunk"),
        pytest.param(2, 3, [["dev-0", "dev-1"], ["dev-2"]], id="at-most-3"),
        pytest.param(5, 2, [["dev-0", "dev-1"]], id="at-most-below-a-chunk"),
    ],
)
def test_device_pages_follow_the_next_link(chunk_size: int | None, at_most: int | None, pages: list[list[str]]) -> None:
    seen: list[httpx.URL] = []
    with paged_fleet(seen) as api:
        got = [[d["id"] for d in page] for page in api.device_pages("site=a", chunk_size, at_most)]
    assert got == pages
    assert all(url.params["selector"] == "site=a" for url in seen)
    assert len(seen) == len(pages)


def test_a_next_link_to_another_host_is_followed_on_this_server_only() -> None:
    """The token goes only to the server edgectl was pointed at: the link's query is taken, its host is not."""
    seen: list[httpx.URL] = []
    with paged_fleet(seen, next_host="elsewhere.test") as api:
        assert [d["id"] for d in api.devices()] == [d["id"] for d in FLEET]
    assert {url.host for url in seen} == {"cp.test"}


def test_a_next_link_that_names_the_same_page_is_an_error() -> None:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=[{"id": "a"}], headers={"Link": f'<{request.url}>; rel="next"'})

    with ApiClient("http://cp.test", transport=httpx.MockTransport(answer)) as api, pytest.raises(CliError):
        api.devices()
