"""``kubectl gelu``: the on-call command line for GeluModelRollouts (the commands).

Installed as the executable ``kubectl-gelu``, so that kubectl finds it as a plugin once it is
on ``PATH``. It follows kubectl's conventions: ``-n/--namespace`` (default: the kubeconfig
context's namespace), ``-A/--all-namespaces``, ``--kubeconfig``, ``--context``; errors go to
stderr as ``error: ...`` with exit status 1. The connection is :mod:`.connection`, the watch
loop :mod:`.watch`, the manual requests :mod:`.requests`; the rendering lives in
:mod:`gelu_rollout.cli.status_view`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from gelu_rollout.adapters.kube import KubeError
from gelu_rollout.adapters.kube.kinds import ROLLOUT
from gelu_rollout.cli.kubectl.connection import (
    CliError,
    Cluster,
    Connection,
    connect,
    get_rollout,
    kubectl_errors,
)
from gelu_rollout.cli.kubectl.requests import RESOURCE, WHAT_HAPPENS, send_request
from gelu_rollout.cli.kubectl.watch import watch_rollout
from gelu_rollout.cli.output import make_console
from gelu_rollout.cli.report import render_report
from gelu_rollout.cli.status_view import format_columns, list_rows, render_status, to_text
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, RequestKind
from gelu_rollout.spec import PLURAL, Stage

app = typer.Typer(
    name="kubectl-gelu",
    help="Inspect and steer GeluModelRollouts (kubectl gelu ...).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

NamespaceOption = Annotated[
    str | None,
    typer.Option(
        "-n",
        "--namespace",
        help="The namespace (default: the kubeconfig context's, else 'default').",
        show_default=False,
    ),
]
KubeconfigOption = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig",
        help="Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config).",
        show_default=False,
    ),
]
ContextOption = Annotated[
    str | None,
    typer.Option("--context", help="The kubeconfig context to use.", show_default=False),
]
NameArgument = Annotated[str, typer.Argument(help="The GeluModelRollout's name.")]
T = TypeVar("T")


# --- global options ----------------------------------------------------------------------


@app.callback()
def main(
    ctx: typer.Context,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Inspect and steer GeluModelRollouts: status, report, list, promote, abort, retry."""
    ctx.obj = Connection(kubeconfig, context, namespace)


def _connection(ctx: typer.Context, local: Connection) -> Connection:
    given = ctx.obj if isinstance(ctx.obj, Connection) else Connection()
    return given.merged(local)


def _run(cluster: Cluster, work: Coroutine[Any, Any, T]) -> T:
    """Run one command's API work to its end, then close the cluster's client."""

    async def run() -> T:
        async with cluster.client:
            return await work

    return asyncio.run(run())


# --- status ------------------------------------------------------------------------------


@app.command()
def status(
    ctx: typer.Context,
    name: NameArgument,
    watch: Annotated[
        bool,
        typer.Option(
            "--watch",
            "-w",
            help=("Redraw until the rollout is promoted (exit 0) or rolled back (exit 1)."),
        ),
    ] = False,
    interval_seconds: Annotated[
        float, typer.Option("--interval-seconds", min=0.1, help="Seconds between redraws.")
    ] = 2.0,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Stage, step, weights, conditions and the decision ledger (newest first)."""
    connection = _connection(ctx, Connection(kubeconfig, context, namespace))
    console = make_console()
    with kubectl_errors():
        cluster = connect(connection)
        if not watch:
            rollout = _run(cluster, get_rollout(cluster, name))
            view = render_status(rollout, width=console.width)
            if console.is_terminal:
                console.print(view)
            else:  # plain text for pipes and logs, without rich's trailing padding
                typer.echo(to_text(view, width=console.width), nl=False)
            return
        try:
            outcome = _run(cluster, watch_rollout(cluster, name, console, interval_seconds))
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    raise typer.Exit(0 if outcome is Stage.PROMOTED else 1)


# --- report ------------------------------------------------------------------------------


@app.command()
def report(
    ctx: typer.Context,
    name: NameArgument,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="Where to write the HTML page (default: NAME.html).",
            show_default=False,
        ),
    ] = None,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Write the decision report, one self-contained HTML page (NAME.html by default).

    The outcome in plain words, the timeline, a chart per gate (value, confidence bound and
    threshold over time) and the ledger; it opens without a network.
    """
    connection = _connection(ctx, Connection(kubeconfig, context, namespace))
    target = output if output is not None else Path(f"{name}.html")
    with kubectl_errors():
        cluster = connect(connection)
        rollout = _run(cluster, get_rollout(cluster, name))
        page = render_report(rollout, generated_at=datetime.now(UTC))
        try:
            target.write_text(page, encoding="utf-8")
        except OSError as error:
            raise CliError(f"cannot write {target}: {error.strerror or error}") from None
    typer.echo(f"{RESOURCE}/{name}: report written to {target}")


# --- list --------------------------------------------------------------------------------


@app.command("list")
def list_(
    ctx: typer.Context,
    all_namespaces: Annotated[
        bool, typer.Option("-A", "--all-namespaces", help="List rollouts in every namespace.")
    ] = False,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """One line per rollout: name, stage, step, weight, last verdict, age."""
    connection = _connection(ctx, Connection(kubeconfig, context, namespace))
    with kubectl_errors():
        cluster = connect(connection)
        where = None if all_namespaces else cluster.namespace
        try:
            rollouts = _run(cluster, cluster.client.list(ROLLOUT, where))
        except KubeError as error:
            if error.status == 404:
                raise CliError(
                    f'the server doesn\'t have a resource type "{PLURAL}" (is the CRD installed?)'
                ) from None
            raise
    if not rollouts:
        scope = "" if all_namespaces else f" in {cluster.namespace} namespace"
        typer.echo(f"No resources found{scope}.", err=True)
        return
    typer.echo(format_columns(list_rows(rollouts, all_namespaces=all_namespaces)), nl=False)


# --- requests ----------------------------------------------------------------------------


def _request(ctx: typer.Context, kind: RequestKind, name: str, local: Connection) -> None:
    connection = _connection(ctx, local)
    with kubectl_errors():
        cluster = connect(connection)
        value, view = _run(cluster, send_request(cluster, kind, name))
    if view.pending_request is not None:
        typer.echo(f"note: replaces the request {view.pending_request}, not acted on yet")
    typer.echo(
        f"{RESOURCE}/{name}: {kind.value} requested; {WHAT_HAPPENS[(kind, view.status.stage)]}"
    )
    typer.echo(f"  ({REQUEST_ANNOTATION}={value}; follow it with: kubectl gelu status {name} -w)")


@app.command()
def promote(
    ctx: typer.Context,
    name: NameArgument,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Ask the operator to promote the candidate now (refused while a critical gate fails)."""
    _request(ctx, RequestKind.PROMOTE, name, Connection(kubeconfig, context, namespace))


@app.command()
def abort(
    ctx: typer.Context,
    name: NameArgument,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Ask the operator to roll the candidate back now."""
    _request(ctx, RequestKind.ABORT, name, Connection(kubeconfig, context, namespace))


@app.command()
def retry(
    ctx: typer.Context,
    name: NameArgument,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Ask the operator to start a rolled-back rollout again, or a paused step's analysis."""
    _request(ctx, RequestKind.RETRY, name, Connection(kubeconfig, context, namespace))
