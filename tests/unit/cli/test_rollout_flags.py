"""`edgectl rollout create` flags become the RolloutRequest an operator means, or a clear error before sending."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from control_plane.cli.commands.rollouts import StagingFlags, apply_staging, rollout_body
from control_plane.cli.main import app
from control_plane.cli.parsing import SpecError, load_rollout_spec, parse_amount, validate_rollout

BASE = rollout_body("demo", 2, ["site=a"], None, "all-at-once")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("3", {"count": 3}, id="count"),
        pytest.param("10%", {"percent": 10.0}, id="percent"),
        pytest.param(" 50% ", {"percent": 50.0}, id="spaces"),
    ],
)
def test_amounts(text: str, expected: dict[str, float]) -> None:
    assert parse_amount(text) == expected


def test_an_amount_that_is_neither_says_so() -> None:
    with pytest.raises(ValueError, match="neither a device count"):
        parse_amount("half")


def test_canary_waves_bake_and_gates_become_a_staged_request() -> None:
    flags = StagingFlags(
        canary="1",
        canary_labels=("site=b",),
        waves=("50%", "50%"),
        bake_s=30,
        max_unavailable="10%",
        gate_min_requests=100,
        gate_max_p99_ratio=1.5,
        on_fail="pause",
    )
    body = validate_rollout(apply_staging(BASE, flags), "flags")
    assert body["strategy"]["type"] == "canary"
    assert body["strategy"]["canary"] == {"count": 1, "labels": {"site": "b"}}
    assert body["strategy"]["waves"] == [{"percent": 50.0}, {"percent": 50.0}]
    assert body["bake_s"] == 30
    assert body["max_unavailable"] == {"percent": 10.0}
    assert body["gates"]["min_requests"] == 100
    assert body["gates"]["max_p99_ratio"] == 1.5
    assert body["gates"]["on_fail"] == "pause"


def test_no_staging_flags_is_all_at_once() -> None:
    body = validate_rollout(apply_staging(BASE, StagingFlags()), "flags")
    assert body["strategy"]["type"] == "all-at-once"
    assert body["selector"]["labels"] == {"site": "a"}


@pytest.mark.parametrize(
    ("flags", "field"),
    [
        pytest.param(StagingFlags(canary="150%"), "strategy.canary", id="canary-over-100"),
        pytest.param(StagingFlags(gate_max_error_rate=2.0), "gates.max_error_rate", id="error-rate-over-1"),
        pytest.param(StagingFlags(on_fail="explode"), "gates.on_fail", id="bad-on-fail"),
    ],
)
def test_bad_flags_are_refused_naming_the_field(flags: StagingFlags, field: str) -> None:
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        validate_rollout(apply_staging(BASE, flags), "rollout flags")


def test_a_spec_file_is_validated_with_its_name_in_the_error(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("model: demo\nversion: 2\nstrategy: {type: canary, canary: {count: 1}, waves: [{percent: 100}]}\n")
    assert load_rollout_spec(good)["strategy"]["type"] == "canary"
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: demo\nversion: 0\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: field `version`"):
        load_rollout_spec(bad)


def test_spec_and_flags_together_are_refused(tmp_path: Path) -> None:
    spec = tmp_path / "r.yaml"
    spec.write_text("model: demo\nversion: 2\n")
    result = CliRunner().invoke(
        app, ["--url", "http://127.0.0.1:1", "rollout", "create", "--spec", str(spec), "--canary", "1"]
    )
    assert result.exit_code == 2
    assert "--spec holds the whole rollout" in result.output
