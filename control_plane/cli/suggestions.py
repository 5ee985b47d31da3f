""" "Did you mean ...?": a refusal that names an unknown device, model, rollout or build, or a selector's label
key, is told which known names are closest (difflib), as git and kubectl do for commands.

Lookups are bounded: one page of names per refusal (LOOKUP_PAGE), never a scan of the fleet. A lookup that fails
for any reason leaves the server's own message as it was: a hint must never hide the error it explains.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any

from control_plane.cli.client import ApiClient, CliError, RequestRejected

LOOKUP_PAGE = 500  # names asked for per hint: one page of the server's list
MAX_SUGGESTIONS = 3

OpenClient = Callable[[], AbstractContextManager[ApiClient]]

_NO_VERSION = re.compile(r"model '([^']+)' has no version (\d+)")
_REQUEST = re.compile(r"^[A-Z]+ (/\S*) failed \(\d+\): ")
_DEVICE = re.compile(r"^/v1/devices/([^/?]+)")
_MODEL = re.compile(r"^/v1/models/([^/?]+)(?:/versions/(\d+))?")
_ROLLOUT = re.compile(r"^/v1/rollouts/([^/?]+)")
_BUILD = re.compile(r"^/v1/builds/([^/?]+)")


def did_you_mean(word: str, known: Iterable[str]) -> str:
    """`; did you mean 'a' or 'b'?` for the known names closest to `word`, or "" when none is close."""
    matches = difflib.get_close_matches(word, sorted(set(known)), n=MAX_SUGGESTIONS, cutoff=0.6)
    if not matches:
        return ""
    return "; did you mean " + " or ".join(repr(m) for m in matches) + "?"


def unknown_label_keys(wanted: Iterable[str], known: Iterable[str]) -> str | None:
    """The message for a selector naming keys no device carries (None when every key exists)."""
    known_keys = set(known)
    missing = [key for key in wanted if key not in known_keys]
    if not missing:
        return None
    key = missing[0]
    hint = did_you_mean(key, known_keys) or (
        f"; the keys devices carry: {', '.join(sorted(known_keys)[:10])}" if known_keys else "; no device has labels"
    )
    return f"no device has label key {key!r}{hint}"


def explain(error: RequestRejected, open_client: OpenClient) -> str:
    """The message to show for a refusal: the server's, with the closest known names when it names an unknown one."""
    if error.status not in (404, 409):
        return str(error)
    try:
        with open_client() as api:
            better = _explain(error, api)
    except CliError:
        return str(error)
    return better or str(error)


def _explain(error: RequestRejected, api: ApiClient) -> str | None:
    text = str(error)
    missing_version = _NO_VERSION.search(text)
    match = _REQUEST.match(text)
    path = match.group(1) if match else ""
    if missing_version:
        return _model(api, missing_version.group(1), int(missing_version.group(2)), text)
    if error.status != 404:
        return None
    if found := _MODEL.match(path):
        return _model(api, found.group(1), int(found.group(2)) if found.group(2) else None, text)
    if found := _DEVICE.match(path):
        return text + did_you_mean(found.group(1), _ids(api.get("/v1/devices", limit=LOOKUP_PAGE), "id"))
    if found := _ROLLOUT.match(path):
        return text + did_you_mean(found.group(1), _ids(api.get("/v1/rollouts", limit=LOOKUP_PAGE), "id"))
    if _BUILD.match(path):
        return text + "; `edgectl builds list MODEL VERSION` lists a version's builds"
    return None


def _model(api: ApiClient, name: str, version: int | None, text: str) -> str | None:
    """No such model: say so, with the closest names; no such version: name the model's latest."""
    try:
        model = api.get(f"/v1/models/{name}")
    except RequestRejected as exc:
        if exc.status != 404:
            raise
        names = _ids(api.get("/v1/models"), "name")[:LOOKUP_PAGE]
        hint = did_you_mean(name, names) or ("; `edgectl models list` lists them" if names else "; none is registered")
        request = _REQUEST.match(text)
        return f"{request.group(0) if request else ''}no model named {name!r}{hint}"
    if version is None:
        return None
    latest = model.get("latest_version") if isinstance(model, dict) else None
    return f"{text}; its latest version is {latest}" if latest else None


def _ids(items: Any, field: str) -> list[str]:
    return (
        [str(item[field]) for item in items if isinstance(item, dict) and field in item]
        if isinstance(items, list)
        else []
    )
