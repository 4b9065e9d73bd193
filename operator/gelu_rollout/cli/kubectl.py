"""``kubectl gelu``: the on-call command line for GeluModelRollouts.

Installed as the executable ``kubectl-gelu``, so that kubectl finds it as a plugin once it is
on ``PATH``. It follows kubectl's conventions: ``-n/--namespace`` (default: the kubeconfig
context's namespace), ``-A/--all-namespaces``, ``--kubeconfig``, ``--context``; errors go to
stderr as ``error: ...`` with exit status 1. The rendering lives in :mod:`.status_view`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.text import Text

from gelu_rollout.adapters.kube import KubeClient, KubeError, Object, api_client
from gelu_rollout.cli.output import fail
from gelu_rollout.cli.status_view import (
    format_columns,
    list_rows,
    read_rollout,
    render_status,
    summary_line,
    to_text,
)
from gelu_rollout.rollout.requests import REQUEST_ANNOTATION, RequestKind
from gelu_rollout.spec import API_VERSION, KIND, PLURAL, Stage, format_time

app = typer.Typer(
    name="kubectl-gelu",
    help="Inspect and steer GeluModelRollouts (kubectl gelu ...).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

RESOURCE: Final = "gelumodelrollout"
SERVICE_ACCOUNT_NAMESPACE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
NON_TERMINAL_WIDTH: Final = 200
"""Lines are this long when the output is not a terminal (a pipe, a CI log) and $COLUMNS is
not set."""

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


class CliError(Exception):
    """A failure to report as ``error: <message>`` with exit status 1."""


@dataclass(frozen=True)
class Connection:
    """Where the global options point: a cluster and a namespace."""

    kubeconfig: str | None = None
    context: str | None = None
    namespace: str | None = None

    def merged(self, local: Connection) -> Connection:
        """Options given after the command win over those given before it."""
        return Connection(
            local.kubeconfig or self.kubeconfig,
            local.context or self.context,
            local.namespace or self.namespace,
        )


@dataclass(frozen=True)
class Cluster:
    client: KubeClient
    namespace: str
    """The namespace to use: the option's, else the context's, else ``default``."""


def _kubeconfig_files(kubeconfig: str | None) -> str | None:
    """The kubeconfig path(s) kubectl would read, or None to try the in-cluster account."""
    if kubeconfig:
        if not Path(kubeconfig).expanduser().is_file():
            raise CliError(f"cannot read the kubeconfig {kubeconfig}: no such file")
        return kubeconfig
    from_env = os.environ.get("KUBECONFIG", "")
    if from_env.strip(os.pathsep):
        return from_env
    default = Path("~/.kube/config").expanduser()
    return str(default) if default.is_file() else None


def _context_namespace(files: str, context: str | None) -> str | None:
    from kubernetes import config

    contexts, active = config.list_kube_config_contexts(config_file=files)  # type: ignore[no-untyped-call]
    if context is not None:
        chosen = next((c for c in contexts or [] if c.get("name") == context), None)
        if chosen is None:
            raise CliError(f'context "{context}" does not exist')
    else:
        chosen = active
    details = (chosen or {}).get("context") or {}
    namespace = details.get("namespace")
    return str(namespace) if namespace else None


def connect(connection: Connection) -> Cluster:
    """A client for the cluster the options name, and the namespace to use there."""
    files = _kubeconfig_files(connection.kubeconfig)
    if files is None:
        namespace = connection.namespace
        if namespace is None and SERVICE_ACCOUNT_NAMESPACE.is_file():
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        if connection.context is not None:
            raise CliError(f'context "{connection.context}" does not exist: no kubeconfig found')
        return Cluster(KubeClient(api_client(None)), namespace or "default")
    namespace = connection.namespace or _context_namespace(files, connection.context)
    client = KubeClient(api_client(files, connection.context))
    return Cluster(client, namespace or "default")


def _describe(error: BaseException) -> str:
    """A one-line account of a failure to talk to the API server."""
    import urllib3

    if isinstance(error, KubeError):
        return str(error)
    if isinstance(error, urllib3.exceptions.MaxRetryError):
        reason = error.reason
        url = f"{error.pool.scheme}://{error.pool.host}:{error.pool.port}" if error.pool else ""
        detail = str(reason).split(": ", 1)[-1] if reason is not None else str(error)
        return f"the connection to the server {url} failed: {detail}"
    return f"{type(error).__name__}: {error}"


def _api_errors() -> tuple[type[BaseException], ...]:
    import urllib3
    from kubernetes.config import ConfigException

    return (KubeError, urllib3.exceptions.HTTPError, ConfigException, OSError)


@contextlib.contextmanager
def kubectl_errors() -> Iterator[None]:
    """Turn every expected failure into ``error: ...`` and exit 1; never a traceback."""
    from kubernetes.config import ConfigException

    try:
        yield
    except CliError as error:
        raise fail(str(error)) from None
    except ConfigException as error:
        raise fail(f"invalid kubeconfig: {error}") from None
    except _api_errors() as error:
        raise fail(_describe(error)) from None


def not_found(name: str) -> CliError:
    return CliError(f'{PLURAL} "{name}" not found')


def get_rollout(cluster: Cluster, name: str) -> Object:
    rollout = cluster.client.get(API_VERSION, KIND, cluster.namespace, name)
    if rollout is None:
        raise not_found(name)
    return rollout


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(highlight=False, width=NON_TERMINAL_WIDTH)
    return console


# --- global options ----------------------------------------------------------------------


@app.callback()
def main(
    ctx: typer.Context,
    namespace: NamespaceOption = None,
    kubeconfig: KubeconfigOption = None,
    context: ContextOption = None,
) -> None:
    """Inspect and steer GeluModelRollouts: status, list, promote, abort, retry."""
    ctx.obj = Connection(kubeconfig, context, namespace)


def _connection(ctx: typer.Context, local: Connection) -> Connection:
    given = ctx.obj if isinstance(ctx.obj, Connection) else Connection()
    return given.merged(local)


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
    console = _console()
    with kubectl_errors():
        cluster = connect(connection)
        if not watch:
            rollout = get_rollout(cluster, name)
            if console.is_terminal:
                console.print(render_status(rollout))
            else:  # plain text for pipes and logs, without rich's trailing padding
                typer.echo(to_text(render_status(rollout), width=console.width), nl=False)
            return
        try:
            outcome = watch_rollout(cluster, name, console, interval_seconds)
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
    raise typer.Exit(0 if outcome is Stage.PROMOTED else 1)


def _ledger_rows(console: Console) -> int:
    """How many ledger rows fit under the header in a terminal of this height."""
    return max(5, console.size.height - 30)


def _poll(cluster: Cluster, name: str) -> tuple[Object | None, str | None]:
    """The rollout, or why it could not be read this time (a blip of the API server or the
    network, worth another try). A rollout that is gone, or a refusal, raises."""
    try:
        return get_rollout(cluster, name), None
    except _api_errors() as error:
        if isinstance(error, KubeError) and error.status < 500:
            raise
        return None, _describe(error)


def watch_rollout(cluster: Cluster, name: str, console: Console, interval_seconds: float) -> Stage:
    """Follow the rollout until it is promoted or rolled back; return that stage.

    In a terminal the view is redrawn in place (``rich.live.Live``); elsewhere (a pipe, a CI
    log) each new summary line is printed with its time, then the whole status at the end.
    """
    if not console.is_terminal:
        return _watch_plain(cluster, name, console, interval_seconds)
    last: Object | None = None
    with Live(console=console, auto_refresh=False, transient=False) as live:
        while True:
            rollout, problem = _poll(cluster, name)
            last = rollout or last
            stage = read_rollout(last).status.stage if last is not None else None
            done = stage is not None and stage.terminal
            parts: list[RenderableType] = []
            if last is not None:
                limit = None if done else _ledger_rows(console)
                parts.append(render_status(last, ledger_limit=limit))
            if problem is not None:
                parts.append(Text(f"error: {problem} (retrying)", style="yellow"))
            if not done:
                parts.append(
                    Text(
                        f"\nwatching every {interval_seconds:g}s, "
                        f"{datetime.now(UTC):%H:%M:%S} UTC; Ctrl-C to stop",
                        style="dim",
                    )
                )
            live.update(Group(*parts), refresh=True)
            if stage is not None and done:
                return stage
            time.sleep(interval_seconds)


def _watch_plain(cluster: Cluster, name: str, console: Console, interval_seconds: float) -> Stage:
    last_summary: str | None = None
    while True:
        rollout, problem = _poll(cluster, name)
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
                typer.echo(to_text(render_status(rollout), width=console.width), nl=False)
                return view.status.stage
        time.sleep(interval_seconds)


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
            rollouts = cluster.client.list(API_VERSION, KIND, where)
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

WHAT_HAPPENS: Final[dict[tuple[RequestKind, Stage], str]] = {
    (RequestKind.PROMOTE, Stage.PROGRESSING): (
        "the operator promotes at its next analysis tick unless a critical gate "
        "(nonFinite, burnRate) fails"
    ),
    (RequestKind.PROMOTE, Stage.PAUSED): (
        "the operator promotes at its next analysis tick unless a critical gate "
        "(nonFinite, burnRate) fails"
    ),
    (RequestKind.ABORT, Stage.PENDING): (
        "the operator rolls back at its next tick: the candidate is scaled to 0 "
        "and the baseline keeps serving"
    ),
    (RequestKind.ABORT, Stage.PROGRESSING): (
        "the operator rolls back at its next tick: the candidate's weight goes to 0% "
        "and the baseline keeps serving"
    ),
    (RequestKind.ABORT, Stage.PAUSED): (
        "the operator rolls back at its next tick: the candidate's weight goes to 0% "
        "and the baseline keeps serving"
    ),
    (RequestKind.RETRY, Stage.PAUSED): (
        "the operator restarts the current step's analysis at its next tick"
    ),
    (RequestKind.RETRY, Stage.ROLLED_BACK): (
        "the operator starts the rollout again at its next tick: the probe (if enabled), "
        "then step 1"
    ),
}


def refusal(kind: RequestKind, name: str, stage: Stage) -> str | None:
    """Why a request cannot apply to a rollout in this stage, or None if it can."""
    if (kind, stage) in WHAT_HAPPENS:
        return None
    subject = f"{RESOURCE}/{name} is {stage.value}"
    if kind is RequestKind.RETRY:
        return f"{subject}: retry is ignored unless the rollout is Paused or RolledBack"
    if stage.terminal:
        hint = " (retry starts a rolled-back rollout again)" if stage is Stage.ROLLED_BACK else ""
        return f"{subject}: the rollout is finished, there is nothing to {kind.value}{hint}"
    return (
        f"{subject}: the operator ignores promote until the probe has passed "
        "and the rollout is Progressing or Paused"
    )


def request_id(now: datetime | None = None) -> str:
    """A fresh request id: the UTC time, to the microsecond."""
    return format_time((now or datetime.now(UTC)).astimezone(UTC))


def _request(ctx: typer.Context, kind: RequestKind, name: str, local: Connection) -> None:
    connection = _connection(ctx, local)
    with kubectl_errors():
        cluster = connect(connection)
        rollout = get_rollout(cluster, name)
        view = read_rollout(rollout)
        stage = view.status.stage
        refused = refusal(kind, name, stage)
        if refused is not None:
            raise CliError(refused)
        value = f"{kind.value}/{request_id()}"
        patch: dict[str, Any] = {"metadata": {"annotations": {REQUEST_ANNOTATION: value}}}
        try:
            cluster.client.merge_patch(API_VERSION, KIND, cluster.namespace, name, patch)
        except KubeError as error:
            if error.status == 404:
                raise not_found(name) from None
            raise
    if view.pending_request is not None:
        typer.echo(f"note: replaces the request {view.pending_request}, not acted on yet")
    typer.echo(f"{RESOURCE}/{name}: {kind.value} requested; {WHAT_HAPPENS[(kind, stage)]}")
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
