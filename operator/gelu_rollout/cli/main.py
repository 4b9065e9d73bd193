"""The ``gelu-rollout`` command line: run, validate, crd, check-model, and the commands of
installed plugins.

A plugin is an entry point in the ``gelu_rollout.commands`` group naming a function that takes
the Typer app and adds its commands (the lab adds ``demo``, ``replay`` and ``bench``). The
operator never imports a plugin by name: without one installed, its commands are absent.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from pathlib import Path
from typing import Annotated

import typer
import yaml

from gelu_rollout.cli.check_model import check_model
from gelu_rollout.cli.output import fail
from gelu_rollout.spec import SpecError, parse_spec

PLUGIN_GROUP = "gelu_rollout.commands"

app = typer.Typer(
    name="gelu-rollout",
    help="Canary rollouts of GELU model variants on Triton, promoted or rolled back on evidence.",
    no_args_is_help=True,
    add_completion=False,
)


@app.command()
def validate(
    path: Annotated[Path, typer.Argument(help="A GeluModelRollout manifest (YAML or JSON).")],
) -> None:
    """Check a GeluModelRollout manifest and print its spec with every default filled in."""
    try:
        documents = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except (OSError, yaml.YAMLError) as error:
        raise fail(f"cannot read {path}: {error}") from None
    if not documents:
        raise fail(f"{path} holds no document")
    failed = False
    for document in documents:
        try:
            spec = parse_spec(document)
        except SpecError as error:
            failed = True
            name = (
                (document.get("metadata") or {}).get("name", "?")
                if isinstance(document, dict)
                else "?"
            )
            typer.echo(
                f"error: {path} ({name}): {len(error.problems)} problem(s)\n{error}", err=True
            )
            continue
        typer.echo(yaml.safe_dump({"spec": spec.to_dict()}, sort_keys=False), nl=False)
    if failed:
        raise typer.Exit(1)


@app.command()
def crd(
    output: Annotated[
        Path | None, typer.Option(help="Write the YAML to this file instead of stdout.")
    ] = None,
) -> None:
    """Print the GeluModelRollout CustomResourceDefinition as YAML, for kubectl apply -f."""
    from gelu_rollout.resources.crd import render_crd_yaml

    text = render_crd_yaml()
    if output is None:
        typer.echo(text, nl=False)
        return
    try:
        output.write_text(text)
    except OSError as error:
        raise fail(f"cannot write {output}: {error}") from None
    typer.echo(f"CustomResourceDefinition written to {output}")


@app.command()
def run(
    prometheus_url: Annotated[
        str, typer.Option(help="Prometheus that scrapes the Triton pods.")
    ] = "http://prometheus-operated.monitoring.svc:9090",
    kubeconfig: Annotated[
        str | None, typer.Option(help="Kubeconfig file (default: in-cluster, then ~/.kube).")
    ] = None,
    context: Annotated[str | None, typer.Option(help="Kubeconfig context.")] = None,
    namespace: Annotated[
        list[str] | None,
        typer.Option("--namespace", "-n", help="Watch this namespace (repeat); default: all."),
    ] = None,
    tick_seconds: Annotated[
        float, typer.Option(min=0.5, help="How often each rollout is reconciled.")
    ] = 5.0,
    scrape_interval_seconds: Annotated[
        float, typer.Option(min=0.1, help="Prometheus' scrape interval for the Triton pods.")
    ] = 15.0,
    metrics_port: Annotated[int, typer.Option(help="Port of the operator's own metrics.")] = 8080,
    liveness_port: Annotated[int, typer.Option(help="Port of the /healthz liveness probe.")] = 8081,
    bind_address: Annotated[str, typer.Option(help="Address the two ports bind to.")] = "0.0.0.0",
    peering: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help="Run beside other replicas with Kopf peering under this name: only the one of"
            " highest priority works, the others take over when it stops. The operator creates"
            " the peering object (ClusterKopfPeering, or a KopfPeering per namespace) where it"
            " is missing; the peering CRDs must be installed. Default: standalone.",
        ),
    ] = None,
    peering_priority: Annotated[
        int | None,
        typer.Option(
            help="This replica's peering priority; replicas must differ. Default: derived from"
            " the pod's name ($POD_ID), else from the host name and a suffix of the process's.",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
) -> None:
    """Run the operator: reconcile every GeluModelRollout until interrupted."""
    import asyncio
    import contextlib

    from gelu_rollout.run import OperatorConfig, configure_logging, run_operator

    configure_logging(verbose)
    config = OperatorConfig(
        prometheus_url=prometheus_url,
        kubeconfig=kubeconfig,
        context=context,
        namespaces=tuple(namespace or ()),
        tick_seconds=tick_seconds,
        scrape_interval_seconds=scrape_interval_seconds,
        metrics_port=metrics_port,
        liveness_port=liveness_port,
        bind_address=bind_address,
        peering_name=peering,
        peering_priority=peering_priority,
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_operator(config))


app.command("check-model")(check_model)


def load_plugins(target: typer.Typer) -> None:
    for entry in entry_points(group=PLUGIN_GROUP):
        entry.load()(target)


load_plugins(app)

if __name__ == "__main__":  # pragma: no cover
    app(prog_name="gelu-rollout")
