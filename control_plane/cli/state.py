"""What every `edgectl` command receives from the global options (`--url`, `--token`, `--ca-file`, `--json`).

Built once in the top-level callback and handed down through typer's context; never a module-level global.
The config file `edgectl login` writes is read only when a command talks to the control plane (so `edgectl
server` and `--help` never depend on it).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import typer

from control_plane.cli.client import ApiClient
from control_plane.cli.credentials import Credentials, config_path, resolve
from control_plane.cli.output import Output


@dataclass(frozen=True)
class CliState:
    url_option: str | None
    output: Output
    token_option: str | None = None
    ca_file_option: Path | None = None
    config: Path = field(default_factory=config_path)

    @cached_property
    def credentials(self) -> Credentials:
        return resolve(self.url_option, self.token_option, self.config, self.ca_file_option)

    @property
    def url(self) -> str:
        return self.credentials.url

    @property
    def token(self) -> str | None:
        return self.credentials.token

    @property
    def ca_file(self) -> Path | None:
        return self.credentials.ca_file

    @contextmanager
    def client(self) -> Iterator[ApiClient]:
        with ApiClient(self.url, token=self.token, ca_file=self.ca_file) as api:
            yield api


def state_of(ctx: typer.Context) -> CliState:
    """The CliState of the top-level callback (every command runs under it)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        raise RuntimeError("edgectl commands must run under the top-level app")
    return root.obj
