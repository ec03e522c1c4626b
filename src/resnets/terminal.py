"""Where results are printed: a terminal gets tables fitted to its width; a pipe or a file
gets every value in full.

Rich fits a table to the console's width, and a console that is not a terminal is 80
columns wide, so ``resnets info | cat`` used to print ``resnet…``. Every command prints
results through :func:`result_console`.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

PIPE_WIDTH = 1_000_000  # wide enough that no cell is cut or wrapped; tables keep their own width


def result_console(stderr: bool = False) -> Console:
    """A rich console for results on stdout (or stderr): the terminal's width at a terminal,
    no colour and no width limit otherwise."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return Console(stderr=stderr)
    return Console(stderr=stderr, width=PIPE_WIDTH, no_color=True, highlight=False,
                   soft_wrap=False)
