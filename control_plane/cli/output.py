"""How `edgectl` shows results: rich tables for people, plain JSON for scripts (`--json`).

Commands hand the server's answer and a renderer to `Output.emit`; nothing else prints results, so `--json`
output is always exactly the server's data. Errors and progress go to stderr and never pollute JSON on stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, RenderableType
from rich.markup import escape

Renderer = Callable[[Any], RenderableType]
PageRenderer = Callable[[Any, bool], RenderableType]  # (one page, whether it is the first)

PIPE_WIDTH = 200  # rich assumes 80 columns when not on a terminal; tables in files and pipes need room


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


@dataclass(frozen=True)
class Output:
    as_json: bool = False
    console: Console = field(default_factory=lambda: _console(stderr=False))
    err: Console = field(default_factory=lambda: _console(stderr=True))

    def emit(self, data: Any, render: Renderer) -> None:
        if self.as_json:
            # plain print: rich would wrap long lines and break the JSON
            print(json.dumps(data, indent=2, sort_keys=True, default=str))
        else:
            self.console.print(render(data))

    def emit_pages(self, pages: Iterable[list[Any]], render: PageRenderer) -> None:
        """A paged list as its pages come: each page's rows printed at once (`render(page, first)`: the first page
        carries the title and header, as kubectl prints its chunks); with `--json`, still one array."""
        if self.as_json:
            self.emit([item for page in pages for item in page], lambda data: render(data, True))
            return
        for number, page in enumerate(pages):
            if page or number == 0:
                self.console.print(render(page, number == 0))

    def note(self, message: str) -> None:
        """A human remark (progress, confirmation); on stderr so stdout stays parseable."""
        self.err.print(escape(message), highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
