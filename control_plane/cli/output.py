"""How `edgectl` shows results: rich tables for people, JSON or YAML for scripts (`-o json|yaml|wide`).

This module alone decides the format. Commands hand the server's answer and a renderer to `Output.emit`;
nothing else prints results, so JSON and YAML output are always exactly the server's data (stable, sorted keys).
`-o`/`--output` is accepted after every command that prints a result (`add_output_option` adds it to each one;
the global `--json` before the command is its alias for `-o json`); `wide` swaps a table for its wide variant,
which adds the columns the default leaves out. Errors and progress go to stderr and never pollute stdout.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console, RenderableType
from rich.markup import escape
from typer.core import TyperArgument, TyperOption
from typer.main import _get_param
from typer.utils import get_params_from_function

Renderer = Callable[[Any], RenderableType]
PageRenderer = Callable[[Any, bool], RenderableType]  # (one page, whether it is the first)

PIPE_WIDTH = 200  # rich assumes 80 columns when not on a terminal; tables in files and pipes need room


class OutputFormat(str, Enum):
    TABLE = "table"
    WIDE = "wide"
    JSON = "json"
    YAML = "yaml"


OUTPUT_HELP = "Output format: table, wide (more columns), json or yaml (the server's answer, for scripts)."


def _console(stderr: bool) -> Console:
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else PIPE_WIDTH)


def _plain(data: Any) -> Any:
    """The data as JSON has it (dates and other values as strings), so JSON and YAML show the same thing."""
    return json.loads(json.dumps(data, default=str))


@dataclass
class Output:
    """Where and how results are printed; `format` is set once from `--json`/`-o` before the command runs."""

    format: OutputFormat = OutputFormat.TABLE
    wide_views: Mapping[Callable[..., RenderableType], Callable[..., RenderableType]] = field(default_factory=dict)
    console: Console = field(default_factory=lambda: _console(stderr=False))
    err: Console = field(default_factory=lambda: _console(stderr=True))

    @property
    def as_json(self) -> bool:
        return self.format is OutputFormat.JSON

    @property
    def machine_readable(self) -> bool:
        """JSON or YAML: nothing but the data on stdout, and no live displays."""
        return self.format in (OutputFormat.JSON, OutputFormat.YAML)

    def _renderer(self, render: Callable[..., RenderableType]) -> Callable[..., RenderableType]:
        if self.format is OutputFormat.WIDE:
            return self.wide_views.get(render, render)
        return render

    def emit(self, data: Any, render: Renderer) -> None:
        if self.format is OutputFormat.JSON:
            # plain print: rich would wrap long lines and break the JSON
            print(json.dumps(data, indent=2, sort_keys=True, default=str))
        elif self.format is OutputFormat.YAML:
            print(yaml.safe_dump(_plain(data), sort_keys=True, default_flow_style=False, allow_unicode=True), end="")
        else:
            self.console.print(self._renderer(render)(data))

    def emit_pages(self, pages: Iterable[list[Any]], render: PageRenderer) -> None:
        """A paged list as its pages come: each page's rows printed at once (`render(page, first)`: the first page
        carries the title and header, as kubectl prints its chunks); with JSON or YAML, still one list."""
        if self.machine_readable:
            self.emit([item for page in pages for item in page], lambda data: render(data, True))
            return
        shown = self._renderer(render)
        for number, page in enumerate(pages):
            if page or number == 0:
                self.console.print(shown(page, number == 0))

    def note(self, message: str) -> None:
        """A human remark (progress, confirmation); on stderr so stdout stays parseable."""
        self.err.print(escape(message), highlight=False, soft_wrap=True)

    def error(self, message: str) -> None:
        self.err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def _set_format(ctx: typer.Context, value: OutputFormat | None) -> None:
    """`-o FORMAT` after a command: the root's Output (built by the top-level callback) prints in FORMAT."""
    if value is None or ctx.resilient_parsing:
        return
    output = getattr(ctx.find_root().obj, "output", None)
    if isinstance(output, Output):
        output.format = OutputFormat(value)


def _output_placeholder(
    output: Annotated[
        OutputFormat | None,
        typer.Option("--output", "-o", callback=_set_format, expose_value=False, help=OUTPUT_HELP, show_default=False),
    ] = None,
) -> None:
    """Only its signature is used: typer turns it into the `-o/--output` option every command gets."""


def output_option() -> TyperOption | TyperArgument:
    """The `-o/--output` option, made by typer itself from `_output_placeholder` (as typer makes its own
    `--show-completion`), so its help and choices look like every other option's."""
    return _get_param(get_params_from_function(_output_placeholder)["output"])


def add_output_option(command: Any, skip: frozenset[str], path: str = "") -> None:
    """Give every command under `command` (a click group) its `-o/--output` option, except the command paths in
    `skip` (those that print no result) and commands whose own `-o`/`--output` means something else (a file)."""
    for name, sub in getattr(command, "commands", {}).items():
        where = f"{path} {name}".strip()
        if where in skip:
            continue
        if hasattr(sub, "commands"):
            add_output_option(sub, skip, where)
            continue
        taken = {opt for param in sub.params for opt in getattr(param, "opts", [])}
        if not taken & {"-o", "--output"}:
            sub.params.append(output_option())
