"""The serving bounds as settings (agent.yaml `serving:`), the places for large bodies, and the body's deadline.

Pure or in-process: the same bounds against a real `edge-agent run` are in
tests/integration/agent/test_serving_limits.py.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from starlette.requests import Request

from edge_agent.config import ConfigError, load_config, settings_help
from edge_agent.serving.admission import LargeRequests, is_large
from edge_agent.serving.body import read_body
from edge_agent.serving.errors import ProtocolError
from edge_agent.serving.limits import ServingLimits
from tests.unit.agent.builders import write_config


def test_serving_bounds_from_the_file_and_the_environment(tmp_path, signer, monkeypatch):
    serving = {"max_body_bytes": 4096, "max_json_bytes": 2048, "max_elements": 100, "large_request_bytes": 1024}
    path = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64, serving=serving)
    monkeypatch.setenv("EDGE_AGENT_SERVING__MAX_LARGE_REQUESTS", "3")
    limits = load_config(path).serving.limits()
    assert limits == ServingLimits(
        max_elements=100,
        max_json_bytes=2048,
        max_body_bytes=4096,
        large_request_bytes=1024,
        max_large_requests=3,
        body_timeout_s=60.0,
    )


def test_the_defaults_are_the_serving_limits_defaults(tmp_path, signer):
    path = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64)
    assert load_config(path).serving.limits() == ServingLimits()
    text = settings_help()
    for key in ("max_body_bytes", "max_json_bytes", "max_elements", "large_request_bytes", "max_large_requests"):
        assert f"serving.{key} (default" in text
    assert "serving.body_timeout_s (default 60.0)" in text


@pytest.mark.parametrize(
    ("serving", "message"),
    [
        pytest.param({"max_body_bytes": 0}, "serving.max_body_bytes", id="no-body"),
        pytest.param({"max_body_bytes": 10**15}, "serving.max_body_bytes", id="a-petabyte"),
        pytest.param({"max_body_bytes": "lots"}, "serving.max_body_bytes", id="not-a-number"),
        pytest.param({"max_json_bytes": -1}, "serving.max_json_bytes", id="negative"),
        pytest.param({"max_elements": 10**12}, "serving.max_elements", id="a-trillion-elements"),
        pytest.param({"max_large_requests": 0}, "serving.max_large_requests", id="no-large-request-ever"),
        pytest.param({"max_large_requests": 10**6}, "serving.max_large_requests", id="no-cap"),
        pytest.param({"body_timeout_s": 0}, "serving.body_timeout_s", id="no-time"),
        pytest.param({"body_timeout_s": 86400}, "serving.body_timeout_s", id="a-day"),
        pytest.param(
            {"max_body_bytes": 4096, "max_json_bytes": 8192},
            "serving: Value error, max_json_bytes (8192) must be at most max_body_bytes (4096)",
            id="json-over-body",
        ),
        pytest.param(
            {"max_body_bytes": 4096, "max_json_bytes": 2048, "large_request_bytes": 8192},
            "serving: Value error, large_request_bytes (8192) must be at most max_body_bytes (4096)",
            id="threshold-over-body",
        ),
        pytest.param({"max_bodybytes": 4096}, "max_bodybytes", id="typo"),
    ],
)
def test_absurd_serving_bounds_are_refused_at_load(tmp_path, signer, serving, message):
    path = write_config(tmp_path / "agent.yaml", tmp_path / "data", signer.public_key_b64, serving=serving)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path)


LIMITS = ServingLimits(large_request_bytes=100, max_large_requests=2)


@pytest.mark.parametrize(
    ("declared", "large"),
    [
        pytest.param(100, False, id="at-the-threshold"),
        pytest.param(101, True, id="over-it"),
        pytest.param(None, True, id="chunked-unknown-size"),
    ],
)
def test_which_bodies_are_large(declared, large):
    assert is_large(declared, 100) is large


def test_large_bodies_past_the_places_are_refused_with_retry_after_and_small_ones_pass():
    places = LargeRequests(LIMITS)
    with places.admitted(5000), places.admitted(None):
        with pytest.raises(ProtocolError) as refused, places.admitted(101):
            pytest.fail("a third large body was admitted")
        with places.admitted(100):  # small: never waits for a place
            pass
    assert refused.value.status == 503 and refused.value.headers == {"Retry-After": "1"}
    assert "reading 2 large request bodies already" in refused.value.message
    assert "of 101 bytes was not read" in refused.value.message
    with places.admitted(5000), places.admitted(5000):  # both given back
        pass


def test_a_place_is_given_back_whatever_way_the_request_ends():
    places = LargeRequests(LIMITS)
    for _ in range(3):
        with pytest.raises(ProtocolError), places.admitted(5000):
            raise ProtocolError("the body was malformed")
    with places.admitted(5000), places.admitted(5000):
        pass


def _request(messages: list[dict[str, Any]]) -> Request:
    """A request whose body arrives as `messages`, then never ends (a client that stops sending)."""
    pending = list(messages)

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return Request({"type": "http", "method": "POST", "headers": []}, receive)


def test_a_body_that_stops_arriving_is_a_408_at_its_deadline():
    request = _request([{"type": "http.request", "body": b"x" * 10, "more_body": True}])
    with pytest.raises(ProtocolError) as late:
        asyncio.run(read_body(request, limit=1000, timeout_s=0.05))
    assert late.value.status == 408
    assert "did not arrive within 0.05 s (10 bytes came)" in late.value.message
    assert "serving.body_timeout_s" in late.value.message


def test_a_client_that_leaves_mid_body_is_a_client_error():
    request = _request([{"type": "http.request", "body": b"x" * 10, "more_body": True}, {"type": "http.disconnect"}])
    with pytest.raises(ProtocolError) as left:
        asyncio.run(read_body(request, limit=1000, timeout_s=5))
    assert left.value.status == 400 and "left before its body arrived (10 bytes came)" in left.value.message
