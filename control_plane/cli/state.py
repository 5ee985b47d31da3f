"""What every `edgectl` command receives from the global options (`--url`, `--json`).

Built once in the top-level callback and handed down through typer's context; never a module-level global.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import typer

from control_plane.cli.client import ApiClient
from control_plane.cli.output import Output


@dataclass(frozen=True)
class CliState:
    url: str
    output: Output

    @contextmanager
    def client(self) -> Iterator[ApiClient]:
        with ApiClient(self.url) as api:
            yield api


def state_of(ctx: typer.Context) -> CliState:
    """The CliState of the top-level callback (every command runs under it)."""
    root = ctx.find_root()
    if not isinstance(root.obj, CliState):
        raise RuntimeError("edgectl commands must run under the top-level app")
    return root.obj
