"""Where `edgectl` finds its URL and token: flags, then `EDGECTL_URL` / `EDGECTL_TOKEN`, then the config file
`edgectl login` writes (mode 0600; `$EDGECTL_CONFIG`, else `$XDG_CONFIG_HOME/edgectl/config.yaml`, else
`~/.config/edgectl/config.yaml`).

A config file that others can read is refused rather than used: a token in it is as good as a password.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

import yaml

from control_plane.adapters.private_files import write_private
from control_plane.cli.client import DEFAULT_URL, CliError


@dataclass(frozen=True)
class Credentials:
    url: str
    token: str | None
    ca_file: Path | None = None


def config_path() -> Path:
    explicit = os.environ.get("EDGECTL_CONFIG")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edgectl" / "config.yaml"


def load_config(path: Path) -> dict[str, str]:
    """The saved url and token; {} when there is no file. Refuses a file others can read or write."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return {}
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CliError(f"{path} holds a token but others can read it: run `chmod 600 {path}` (or `edgectl login`)")
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise CliError(f"{path}: cannot read the edgectl config: {exc}") from exc
    if not isinstance(loaded, dict):
        return {}
    return {k: str(v) for k, v in loaded.items() if k in ("url", "token", "ca_file") and v}


def resolve(url: str | None, token: str | None, path: Path, ca_file: Path | None = None) -> Credentials:
    """Flags and environment (already merged by typer) win; the config file fills what they leave unset."""
    saved = load_config(path) if url is None or token is None or ca_file is None else {}
    saved_ca = saved.get("ca_file")
    return Credentials(
        url=url or saved.get("url") or DEFAULT_URL,
        token=token or saved.get("token"),
        ca_file=ca_file or (Path(saved_ca) if saved_ca else None),
    )


def save_config(path: Path, url: str, token: str | None, ca_file: Path | None = None) -> None:
    """Write url, token and CA file readable by this user only (never, even for a moment, by others)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    data = {"url": url} | ({"token": token} if token else {}) | ({"ca_file": str(ca_file.resolve())} if ca_file else {})
    write_private(path, yaml.safe_dump(data))
