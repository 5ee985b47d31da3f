"""Selector parsing (`k=v,gpu_class=C`) and matching."""

from __future__ import annotations

import pytest

from control_plane.domain.selectors import Selector, SelectorError, parse_selector


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(None, Selector(), id="none"),
        pytest.param("  ", Selector(), id="blank"),
        pytest.param("site=factory-a", Selector(labels={"site": "factory-a"}), id="one-label"),
        pytest.param(
            "site=a, line=3,gpu_class=cpu-x86_64",
            Selector(labels={"site": "a", "line": "3"}, gpu_class="cpu-x86_64"),
            id="labels-and-class",
        ),
        pytest.param("gpu_class=jetson-orin", Selector(gpu_class="jetson-orin"), id="class-only"),
        pytest.param("note=", Selector(labels={"note": ""}), id="empty-value"),
        pytest.param("site=a,,line=3,", Selector(labels={"site": "a", "line": "3"}), id="empty-parts"),
        pytest.param("k8s.io/zone=eu", Selector(labels={"k8s.io/zone": "eu"}), id="slash-key"),
    ],
)
def test_parse(text: str | None, expected: Selector) -> None:
    assert parse_selector(text) == expected
    assert parse_selector(expected.as_text()) == expected  # renders back to text that reads the same


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("site", "must look like key=value", id="no-equals"),
        pytest.param("=x", "must look like key=value", id="no-key"),
        pytest.param("bad key=x", "not a valid label key", id="bad-key"),
        pytest.param("site=a,site=b", "twice", id="conflicting"),
    ],
)
def test_parse_refuses(text: str, message: str) -> None:
    with pytest.raises(SelectorError, match=message):
        parse_selector(text)


@pytest.mark.parametrize(
    ("selector", "labels", "gpu_class", "matches"),
    [
        pytest.param(Selector(), {}, None, True, id="empty-matches-all"),
        pytest.param(Selector(labels={"site": "a"}), {"site": "a", "x": "y"}, "c", True, id="subset"),
        pytest.param(Selector(labels={"site": "a"}), {"site": "b"}, "c", False, id="other-value"),
        pytest.param(Selector(labels={"site": "a"}), {}, "c", False, id="label-missing"),
        pytest.param(Selector(gpu_class="c"), {}, "d", False, id="other-class"),
        pytest.param(Selector(gpu_class="c"), {}, None, False, id="no-class-yet"),
    ],
)
def test_matches(selector: Selector, labels: dict[str, str], gpu_class: str | None, matches: bool) -> None:
    assert selector.matches(labels, gpu_class) is matches
