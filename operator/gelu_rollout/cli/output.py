"""What every command prints its errors and results with."""

from __future__ import annotations

import typer
from rich.console import Console

out = Console()


def fail(message: str) -> typer.Exit:
    """Print ``error: message`` on stderr the kubectl way and give the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)
