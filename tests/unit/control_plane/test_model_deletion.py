"""Whether a model or version may be deleted, and the refusal an operator reads: it names what holds it and the
way forward (finish or abort the rollout, move the devices, cancel the build)."""

from __future__ import annotations

import pytest

from control_plane.domain.registry import VersionUsage, deletion_refusal


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        pytest.param(VersionUsage(), None, id="unused"),
        pytest.param(
            VersionUsage(rollouts=("r1", "r2")),
            "cannot delete m v1: unfinished rollout(s) r1, r2 use it (finish or abort them first)",
            id="rollouts",
        ),
        pytest.param(
            VersionUsage(devices=("d1", "d2"), device_count=2),
            "cannot delete m v1: 2 device(s) run it or are told to (d1, d2; roll another version out to them first)",
            id="devices",
        ),
        pytest.param(
            VersionUsage(devices=("d1",), device_count=40),
            "40 device(s) run it or are told to (d1 and 39 more;",
            id="many-devices-counted",
        ),
        pytest.param(
            VersionUsage(running_builds=("b1",)),
            "build(s) b1 are running (`edgectl builds cancel ID` first)",
            id="running-build",
        ),
    ],
)
def test_a_used_version_is_refused_naming_what_uses_it(usage: VersionUsage, expected: str | None) -> None:
    refusal = deletion_refusal("m v1", usage)
    assert (refusal is None) if expected is None else (expected in (refusal or "")), refusal
