"""What the API may hand a playbook as extra vars: declared variables only, data never templates, secrets redacted.

Ansible renders every string it is given as a Jinja template, and a template can run commands on the controller
(`{{ lookup('pipe', ...) }}`) before any host is reached. So a value from the API is accepted only when the
playbook declares its name and type (`playbooks/api_vars.yml`, parsed here from the document the adapter read),
it is never an `ansible_*` connection or privilege variable, and no string in it, at any depth, holds a Jinja
delimiter. The runner additionally writes every accepted string as `!unsafe`, so even a value that slipped past
these checks reaches the play as text (docs/ansible.md, "What the API may set").

Values under secret-looking keys (password, token, private_key, ...) at any depth are shown and stored as `***`.
Pure: nothing here reads a file, and no error message ever repeats a value (it may be a secret).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from control_plane.domain.playbooks import PlaybookName

REDACTED = "***"
MAX_DEPTH = 8  # nesting of lists and maps inside one variable
MAX_ITEMS = 1000  # entries of one list or map
MAX_STRING = 16_384  # characters of one string (a PEM certificate fits)
MIN_SCRUBBED = 4  # shorter secret values are not searched for in messages (they would garble every line)

# What starts a Jinja expression, statement or comment; `#jinja2:` would change the delimiters of a template.
TEMPLATE_MARKERS = ("{{", "{%", "{#", "#jinja2:")
# Names the API can never set, whatever a declaration says: Ansible's connection/privilege variables and the
# magic variables a play reads about itself.
RESERVED_PREFIX = "ansible_"
RESERVED_NAMES = frozenset(
    {
        "hostvars",
        "groups",
        "group_names",
        "inventory_hostname",
        "inventory_hostname_short",
        "inventory_dir",
        "inventory_file",
        "omit",
        "playbook_dir",
        "play_hosts",
        "role_path",
        "environment",
        "vars",
    }
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")

# A key looks secret when it contains one of these ...
_SECRET_PARTS = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "private_key",
    "privatekey",
    "credential",
    "apikey",
    "api_key",
    "access_key",
)
# ... or one of its words (split at anything but letters and digits) is one of these, unless it says "public".
_SECRET_WORDS = frozenset({"pass", "pwd", "key", "pin", "auth", "authorization", "cookie"})
_KEY_MATERIAL = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----")


class DeclarationError(ValueError):
    """The declarations document (api_vars.yml) is malformed; the text says where."""


class VarType(str, Enum):
    STR = "str"
    INT = "int"
    BOOL = "bool"
    LIST = "list"  # a list of JSON values
    MAP = "map"  # an object of JSON values


@dataclass(frozen=True)
class VarSpec:
    """One extra var a playbook takes from the API."""

    name: str
    type: VarType
    choices: tuple[str, ...] = ()  # str: only these
    pattern: str | None = None  # str: the whole value matches this regular expression
    min: int | None = None  # int: bounds, inclusive
    max: int | None = None


# playbook -> variable name -> its spec; a playbook missing here takes no extra vars.
Declarations = Mapping[PlaybookName, Mapping[str, VarSpec]]


# -- the declarations --------------------------------------------------------------------------------------------
def parse_declarations(document: object, source: str) -> dict[PlaybookName, dict[str, VarSpec]]:
    """The declarations of `document` (api_vars.yml as loaded YAML): `{playbook: {name: {type, choices?,
    pattern?, min?, max?}}}`. Raises DeclarationError naming `source` and the faulty entry."""
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise DeclarationError(f"{source}: expected a mapping of playbook -> variables")
    known = {p.value: p for p in PlaybookName}
    out: dict[PlaybookName, dict[str, VarSpec]] = {}
    for playbook, variables in document.items():
        if playbook not in known:
            raise DeclarationError(f"{source}: unknown playbook {playbook!r}; valid: {', '.join(known)}")
        if variables is None:
            variables = {}
        if not isinstance(variables, Mapping):
            raise DeclarationError(f"{source}: {playbook}: expected a mapping of variable -> spec")
        out[known[playbook]] = {
            str(name): _parse_spec(str(name), spec, f"{source}: {playbook}.{name}") for name, spec in variables.items()
        }
    return out


def _parse_spec(name: str, spec: object, where: str) -> VarSpec:
    if not _NAME.fullmatch(name):
        raise DeclarationError(f"{where}: not a variable name")
    if name.startswith(RESERVED_PREFIX) or name in RESERVED_NAMES:
        raise DeclarationError(f"{where}: {name} is reserved to Ansible and the control plane; it cannot be declared")
    if not isinstance(spec, Mapping):
        raise DeclarationError(f"{where}: expected {{type: ...}}")
    unknown = sorted(set(map(str, spec)) - {"type", "choices", "pattern", "min", "max"})
    if unknown:
        raise DeclarationError(f"{where}: unknown keys {', '.join(unknown)}")
    try:
        kind = VarType(spec.get("type"))
    except ValueError:
        raise DeclarationError(f"{where}: type must be one of {', '.join(t.value for t in VarType)}") from None
    choices, pattern, low, high = spec.get("choices"), spec.get("pattern"), spec.get("min"), spec.get("max")
    if (choices is not None or pattern is not None) and kind is not VarType.STR:
        raise DeclarationError(f"{where}: choices and pattern are for str variables")
    if (low is not None or high is not None) and kind is not VarType.INT:
        raise DeclarationError(f"{where}: min and max are for int variables")
    if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
        raise DeclarationError(f"{where}: choices must be a list of strings")
    if pattern is not None:
        try:
            re.compile(str(pattern))
        except re.error as exc:
            raise DeclarationError(f"{where}: pattern: {exc}") from None
    for bound in (low, high):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, int)):
            raise DeclarationError(f"{where}: min and max must be integers")
    return VarSpec(name, kind, tuple(choices or ()), None if pattern is None else str(pattern), low, high)


# -- checking a request's extra vars -----------------------------------------------------------------------------
def check_extra_vars(playbook: PlaybookName, declared: Mapping[str, VarSpec], values: Mapping[str, Any]) -> list[str]:
    """What is wrong with `values` as extra vars of `playbook` (empty: nothing). Each problem names the variable
    (`extra_vars.a.b[2]`), never its value."""
    allowed = ", ".join(sorted(declared)) or "none"
    problems: list[str] = []
    for name in sorted(values):
        value = values[name]
        where = f"extra_vars.{name}"
        if name.startswith(RESERVED_PREFIX) or name in RESERVED_NAMES:
            problems.append(
                f"{where}: {name} is never taken from the API (connection, privilege and magic variables come from "
                f"the enrollment and the control plane's settings); {playbook.file_name} allows: {allowed}"
            )
        elif name not in declared:
            problems.append(f"{where}: {playbook.file_name} does not declare {name}; it allows: {allowed}")
        else:
            problems.extend(_check_type(declared[name], value, where))
            problems.extend(_check_data(value, where, 0))
    return problems


def _check_type(spec: VarSpec, value: object, where: str) -> list[str]:
    expected = {
        VarType.STR: str,
        VarType.INT: int,
        VarType.BOOL: bool,
        VarType.LIST: list,
        VarType.MAP: dict,
    }[spec.type]
    if not isinstance(value, expected) or (spec.type is VarType.INT and isinstance(value, bool)):
        return [f"{where}: must be {spec.type.value}, got {_json_type(value)}"]
    if isinstance(value, str):
        if spec.choices and value not in spec.choices:
            return [f"{where}: must be one of {', '.join(spec.choices)}"]
        if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
            return [f"{where}: must match {spec.pattern}"]
    out_of_bounds = isinstance(value, int) and (
        (spec.min is not None and value < spec.min) or (spec.max is not None and value > spec.max)
    )
    if spec.type is VarType.INT and out_of_bounds:
        return [f"{where}: must be within [{spec.min}, {spec.max}]"]
    return []


def _check_data(value: object, where: str, depth: int) -> list[str]:
    """JSON data only, bounded, with no Jinja delimiter in any string or key."""
    if value is None or isinstance(value, bool | int | float):
        return []
    if isinstance(value, str):
        if len(value) > MAX_STRING:
            return [f"{where}: longer than {MAX_STRING} characters"]
        marker = template_marker(value)
        if marker is not None:
            return [f"{where}: holds {marker!r}: values are data, never Jinja templates"]
        return []
    if depth >= MAX_DEPTH and isinstance(value, list | dict):
        return [f"{where}: nested deeper than {MAX_DEPTH} levels"]
    if isinstance(value, list):
        if len(value) > MAX_ITEMS:
            return [f"{where}: more than {MAX_ITEMS} items"]
        return [p for i, item in enumerate(value) for p in _check_data(item, f"{where}[{i}]", depth + 1)]
    if isinstance(value, dict):
        if len(value) > MAX_ITEMS:
            return [f"{where}: more than {MAX_ITEMS} entries"]
        problems: list[str] = []
        for key, item in value.items():
            if not isinstance(key, str) or len(key) > 256:
                problems.append(f"{where}: a key must be text of at most 256 characters")
                continue
            marker = template_marker(key)
            if marker is not None:
                problems.append(f"{where}: a key holds {marker!r}: values are data, never Jinja templates")
                continue
            problems.extend(_check_data(item, f"{where}.{key}", depth + 1))
        return problems
    return [f"{where}: must be JSON data, got {_json_type(value)}"]


def template_marker(text: str) -> str | None:
    """The first Jinja delimiter `text` holds, or None."""
    return next((m for m in TEMPLATE_MARKERS if m in text), None)


def _json_type(value: object) -> str:
    names = {bool: "bool", int: "int", float: "number", str: "str", list: "list", dict: "map", type(None): "null"}
    return names.get(type(value), type(value).__name__)


# -- secrets -----------------------------------------------------------------------------------------------------
def looks_secret(key: str) -> bool:
    """Whether a variable or map key names a secret (`mqtt_password`, `ansible_become_pass`, `ssh_key`,
    `api_token`, ...); `public_key` does not."""
    lowered = key.lower()
    if any(part in lowered for part in _SECRET_PARTS):
        return True
    words = set(re.split(r"[^a-z0-9]+", lowered))
    return bool(words & _SECRET_WORDS) and "public" not in words


def is_key_material(value: object) -> bool:
    return isinstance(value, str) and _KEY_MATERIAL.search(value) is not None


def redact(value: Any) -> Any:
    """`value` as shown and stored: what a secret-looking key holds (at any depth, in lists too) and any private
    key material are replaced by `***`."""
    if isinstance(value, Mapping):
        return {k: REDACTED if looks_secret(str(k)) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return REDACTED if is_key_material(value) else value


def secret_values(value: Any, secret: bool = False) -> frozenset[str]:
    """Every text that `redact` would hide (looked for in run messages, where a playbook may print it)."""
    if isinstance(value, Mapping):
        return frozenset().union(*(secret_values(v, secret or looks_secret(str(k))) for k, v in value.items()))
    if isinstance(value, list | tuple):
        return frozenset().union(*(secret_values(v, secret) for v in value))
    number = isinstance(value, int | float) and not isinstance(value, bool)
    text = value if isinstance(value, str) else str(value) if secret and number else None
    if text is not None and (secret or is_key_material(text)) and len(text) >= MIN_SCRUBBED:
        return frozenset({text})
    return frozenset()


def scrub(text: str, secrets: frozenset[str]) -> str:
    """`text` with every secret value in it replaced by `***` (the longest first)."""
    for value in sorted(secrets, key=len, reverse=True):
        text = text.replace(value, REDACTED)
    return text


def scrub_data(value: Any, secrets: frozenset[str]) -> Any:
    """`value` with `scrub` applied to every string in it (a playbook may copy a secret anywhere)."""
    if not secrets:
        return value
    if isinstance(value, Mapping):
        return {k: scrub_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [scrub_data(v, secrets) for v in value]
    return scrub(value, secrets) if isinstance(value, str) else value
