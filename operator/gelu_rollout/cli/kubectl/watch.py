"""``kubectl gelu status --watch``: follow a rollout until it is promoted or rolled back."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from gelu_rollout.adapters.kube import KubeError, Object
from gelu_rollout.cli.kubectl.connection import EXPECTED_ERRORS, Cluster, describe, get_rollout
from gelu_rollout.cli.status_view import (
    FitToHeight,
    read_rollout,
    render_status,
    status_layouts,
    summary_line,
    to_text,
)
from gelu_rollout.spec import Stage


async def _poll(cluster: Cluster, name: str) -> tuple[Object | None, str | None]:
    """The rollout, or why it could not be read this time (a blip of the API server or the
    network, worth another try). A rollout that is gone, or a refusal, raises."""
    try:
        return await get_rollout(cluster, name), None
    except EXPECTED_ERRORS as error:
        if isinstance(error, KubeError) and error.status is not None and error.status < 500:
            raise
        return None, describe(error)


async def watch_rollout(
    cluster: Cluster, name: str, console: Console, interval_seconds: float
) -> Stage:
    """Follow the rollout until it is promoted or rolled back; return that stage.

    In a terminal the view is redrawn in place (``rich.live.Live``), fitted to the screen: the
    newest decisions that fit, less detail on a short screen; elsewhere (a pipe, a CI log)
    each new summary line is printed with its time, then the whole status at the end.
    """
    if not console.is_terminal:
        return await _watch_plain(cluster, name, console, interval_seconds)
    last: Object | None = None
    with Live(console=console, auto_refresh=False, vertical_overflow="crop") as live:
        while True:
            rollout, problem = await _poll(cluster, name)
            last = rollout or last
            stage = read_rollout(last).status.stage if last is not None else None
            done = stage is not None and stage.terminal
            footer: list[RenderableType] = []
            if problem is not None:
                footer.append(Text(f"error: {problem} (retrying)", style="yellow"))
            if not done:
                footer.append(
                    Text(
                        f"\nwatching every {interval_seconds:g}s, "
                        f"{datetime.now(UTC):%H:%M:%S} UTC; Ctrl-C to stop",
                        style="dim",
                    )
                )
            view: RenderableType = Group(*footer)
            if last is not None:
                rows = len(read_rollout(last).status.ledger)
                view = FitToHeight(status_layouts(last, footer=footer), rows, least=3)
            live.update(view, refresh=True)
            if stage is not None and done:
                return stage
            await asyncio.sleep(interval_seconds)


async def _watch_plain(
    cluster: Cluster, name: str, console: Console, interval_seconds: float
) -> Stage:
    last_summary: str | None = None
    while True:
        rollout, problem = await _poll(cluster, name)
        stamp = f"{datetime.now(UTC):%H:%M:%S}"
        if problem is not None:
            typer.echo(f"{stamp} error: {problem} (retrying)", err=True)
        if rollout is not None:
            view = read_rollout(rollout)
            summary = summary_line(view)
            if summary != last_summary:
                typer.echo(f"{stamp} {summary}")
                last_summary = summary
            if view.status.stage.terminal:
                typer.echo()
                text = to_text(render_status(rollout, width=console.width), width=console.width)
                typer.echo(text, nl=False)
                return view.status.stage
        await asyncio.sleep(interval_seconds)
