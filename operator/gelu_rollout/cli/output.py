"""What every command prints its errors and results with."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Final, TextIO

import typer
from rich.console import Console

PLAIN_WIDTH: Final = 100
"""How wide lines are where the output is not a terminal (a pipe, a file, a CI log) and
$COLUMNS does not say."""
_SIZE: Final = ("COLUMNS", "LINES")


class _SizedEnviron(Mapping[str, str]):
    """The environment as a console reads it, at each render: without $COLUMNS and $LINES
    in a terminal (they do not follow a resize, and a parent's need not be this terminal's),
    with $COLUMNS defaulting to :data:`PLAIN_WIDTH` elsewhere."""

    def __init__(self) -> None:
        self.console: Console | None = None  # None while the console is being made

    def __getitem__(self, key: str) -> str:
        if key not in _SIZE:
            return os.environ[key]
        if self.console is None or self.console.is_terminal:
            raise KeyError(key)  # read at each render from the terminal itself
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return value
        if key == "COLUMNS":
            return str(PLAIN_WIDTH)
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return iter(os.environ)

    def __len__(self) -> int:
        return len(os.environ)


def make_console(file: TextIO | None = None) -> Console:
    """A console that fits where it writes, decided at each render (standard output may be
    replaced after the console is made): in a terminal, the terminal's own size, so that a
    resized window is followed; elsewhere, plain lines $COLUMNS wide, else
    :data:`PLAIN_WIDTH`."""
    environ = _SizedEnviron()
    console = Console(file=file, highlight=False, _environ=environ)
    environ.console = console
    return console


out = make_console()


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr the kubectl way and give the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)
