"""`edgectl completion bash|zsh`: the shell completion script, as `kubectl completion bash` prints its own.

The script and the answers to it are typer's (`eval "$(edgectl completion bash)"`; the shell then asks
`_EDGECTL_COMPLETE=complete_bash edgectl` for candidates). This module only prints; it never edits a shell's
startup files (typer's `--install-completion` does, which is why edgectl does not offer it).
"""

from __future__ import annotations

from enum import Enum
from typing import Annotated

import typer
from typer._completion_classes import completion_init
from typer._completion_shared import get_completion_script

PROG_NAME = "edgectl"
COMPLETE_VAR = "_EDGECTL_COMPLETE"  # what the printed script sets when it asks edgectl for candidates


class Shell(str, Enum):
    BASH = "bash"
    ZSH = "zsh"


def completion(shell: Annotated[Shell, typer.Argument(help="The shell to complete in.")]) -> None:
    """Print the completion script for SHELL.

    bash: eval "$(edgectl completion bash)" (add it to ~/.bashrc to keep it).
    zsh: eval "$(edgectl completion zsh)" after compinit (add it to ~/.zshrc to keep it).
    """
    print(get_completion_script(prog_name=PROG_NAME, complete_var=COMPLETE_VAR, shell=shell.value))


def register(app: typer.Typer) -> None:
    completion_init()  # typer's answers to the script's requests (bash, zsh), which it registers only on demand
    app.command("completion")(completion)
