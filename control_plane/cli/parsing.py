"""Parsing and local validation of what an operator types or writes: selectors and training spec files.

Errors name the file and the field, so a typo is caught before anything is sent. This module must never touch the
network or the terminal: it returns values or raises `SpecError`/`typer.BadParameter`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from control_plane.cli.client import CliError
from control_plane.domain.errors import InvalidInput
from control_plane.domain.rollout_spec import RolloutRequest
from control_plane.domain.selectors import Selector, parse_selector
from control_plane.domain.training import TrainingJobSpec
from control_plane.domain.training_paths import DATA, ENTRYPOINT, relative_path
from edge_agent.protocol.validation import error_location


class SpecError(CliError):
    """A spec file that cannot be sent: unreadable, not YAML, or failing validation. The text names the file."""


def parse_selectors(texts: list[str]) -> Selector:
    """Several `--selector KEY=VALUE[,KEY=VALUE]` options as one selector (`gpu_class=C` selects the class).

    Raises SelectorError (a ValueError) naming the malformed part.
    """
    return parse_selector(",".join(texts))


def parse_amount(text: str) -> dict[str, int | float]:
    """`3` -> {"count": 3}; `10%` -> {"percent": 10.0}. Raises ValueError naming the text."""
    value = text.strip()
    try:
        if value.endswith("%"):
            return {"percent": float(value[:-1])}
        return {"count": int(value)}
    except ValueError:
        raise ValueError(f"{text!r} is neither a device count (3) nor a percentage (10%)") from None


def validate_rollout(body: dict[str, Any], source: str) -> dict[str, Any]:
    """Check a POST /v1/rollouts body with the server's own model; errors name `source` and the field."""
    try:
        return RolloutRequest.model_validate(body).model_dump(mode="json", exclude_none=True)
    except ValidationError as exc:
        raise SpecError(f"{source}: " + "; ".join(_field_errors(exc))) from exc


def load_rollout_spec(path: Path) -> dict[str, Any]:
    """Read a RolloutRequest from YAML (docs/rollouts.md), validated before anything is sent."""
    return validate_rollout(_read_yaml_mapping(path), str(path))


def load_training_spec(path: Path) -> dict[str, Any]:
    """Read SPEC.yaml and validate it, paths included, before anything is sent.

    `entrypoint` and `data.path` are relative to the server's registered training roots (`training.code_dirs`,
    `training.data_dirs`), not to this machine, so they are sent as written; only their form is checked here.
    """
    raw = _read_yaml_mapping(path)
    try:
        spec = TrainingJobSpec.model_validate(raw)
        relative_path(ENTRYPOINT, spec.entrypoint)
        if spec.data.path is not None:
            relative_path(DATA, spec.data.path)
    except ValidationError as exc:
        raise SpecError(f"{path}: " + "; ".join(_field_errors(exc))) from exc
    except InvalidInput as exc:
        raise SpecError(f"{path}: {exc}") from exc
    return spec.model_dump(mode="json", exclude_none=True)


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(loaded, dict):
        raise SpecError(f"{path}: expected a mapping of fields at the top level")
    return loaded


def _field_errors(exc: ValidationError) -> list[str]:
    return [f"field `{error_location(error)}`: {error.get('msg', 'invalid')}" for error in exc.errors()]


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int | None:
    """`90d`, `12h`, `30m`, `45s` or plain seconds -> seconds; `never` -> None. Raises ValueError naming the text."""
    value = text.strip().lower()
    if value == "never":
        return None
    number, unit = (value[:-1], value[-1]) if value[-1:] in _UNITS else (value, "s")
    if not number.isdigit() or int(number) <= 0:
        raise ValueError(f"{text!r} is not a duration (90d, 12h, 30m, 45s, or never)")
    return int(number) * _UNITS[unit]
