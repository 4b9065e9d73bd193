"""The ``gelu-rollout`` command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console

from gelu_rollout.bench.scenario import ScenarioError, load_scenarios, save_scenarios
from gelu_rollout.spec import SpecError, parse_spec

app = typer.Typer(
    name="gelu-rollout",
    help="Canary rollouts of GELU model variants on Triton, promoted or rolled back on evidence.",
    no_args_is_help=True,
    add_completion=False,
)
bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")

out = Console()


def fail(message: str) -> typer.Exit:
    """Print an error the kubectl way (stderr, no decoration) and give the exit to raise."""
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(1)


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


@bench_app.command("decisions")
def bench_decisions(
    scenarios: Annotated[
        Path | None,
        typer.Option(help="Run the scenario files (*.json) in this folder instead of generating."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the generated suite.")] = 20261125,
    healthy: Annotated[int, typer.Option(help="Healthy scenarios to generate.")] = 320,
    per_fault: Annotated[int, typer.Option(help="Scenarios to generate per fault kind.")] = 30,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CPUs).")] = None,
) -> None:
    """False rollbacks, detection and delay: gelu-rollout vs Flagger- and Kayenta-style."""
    from gelu_rollout.bench.decisions import benchmark
    from gelu_rollout.bench.generate import generate_suite
    from gelu_rollout.cli.render import print_bench_report

    try:
        suite = (
            load_scenarios(scenarios)
            if scenarios is not None
            else generate_suite(seed=seed, healthy=healthy, per_fault=per_fault)
        )
    except ScenarioError as error:
        raise fail(str(error)) from None
    report = benchmark(suite, workers=workers)
    report["source"] = str(scenarios) if scenarios is not None else f"generated (seed {seed})"
    print_bench_report(report, out)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        out.print(f"report written to {json_path}")


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
    )
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run_operator(config))


@bench_app.command("variants")
def bench_variants(
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    requests_batch1: Annotated[
        int, typer.Option(min=50, help="Batch-1 requests per variant for the latency figures.")
    ] = 500,
    requests_batch64: Annotated[
        int, typer.Option(min=10, help="Batch-64 requests per variant for the throughput figures.")
    ] = 200,
) -> None:
    """Every GELU variant on a real Triton: accuracy, KL, NaNs, latency and throughput."""
    from gelu_rollout.bench.variants import benchmark_variants
    from gelu_rollout.cli.render import print_variants_report
    from gelu_rollout.sandbox.triton import TritonStartError, TritonUnavailableError

    try:
        with out.status("starting Triton") as status:
            report = benchmark_variants(
                requests_batch1=requests_batch1,
                requests_batch64=requests_batch64,
                progress=status.update,
            )
    except (TritonUnavailableError, TritonStartError) as error:
        raise fail(str(error)) from None
    print_variants_report(report, out)
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as error:
            raise fail(f"cannot write {json_path}: {error}") from None
        out.print(f"report written to {json_path}")


@bench_app.command("scenarios")
def bench_scenarios(
    directory: Annotated[Path, typer.Argument(help="Folder to write the scenario files into.")],
    seed: Annotated[int, typer.Option(help="Seed of the generated suite.")] = 20261125,
    healthy: Annotated[int, typer.Option(help="Healthy scenarios to generate.")] = 320,
    per_fault: Annotated[int, typer.Option(help="Scenarios to generate per fault kind.")] = 30,
) -> None:
    """Write the generated scenario suite as JSON files (docs/scenario-format.md)."""
    from gelu_rollout.bench.generate import generate_suite

    suite = generate_suite(seed=seed, healthy=healthy, per_fault=per_fault)
    save_scenarios(suite, directory)
    out.print(f"{len(suite)} scenarios written to {directory}")


@app.command()
def demo(
    scenario: Annotated[
        str, typer.Option(help="healthy, nan, latency, errors or drift.")
    ] = "healthy",
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Write the outcome, timings and ledger here.")
    ] = None,
    candidate_repository: Annotated[
        Path | None,
        typer.Option(
            help="Roll out this Triton model repository (one model, same inputs and outputs "
            "as the GELU block) as the candidate instead of the scenario's."
        ),
    ] = None,
    example: Annotated[Path, typer.Option(help="The rollout to apply.")] = Path(
        "examples/rollout.yaml"
    ),
    timeout_seconds: Annotated[float, typer.Option(min=30, help="Give up after this long.")] = 170,
) -> None:
    """Run a rollout end to end on the local sandbox: API, Triton pods, Prometheus, operator."""
    import asyncio

    from gelu_rollout.cli.demo_view import live_view, print_summary
    from gelu_rollout.demo.run import run_scenario
    from gelu_rollout.demo.scenarios import SCENARIOS
    from gelu_rollout.sandbox.prometheus import PrometheusNotInstalledError
    from gelu_rollout.sandbox.triton import TritonUnavailableError

    chosen = SCENARIOS.get(scenario)
    if chosen is None:
        raise fail(f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    out.print(f"[bold]sandbox demo[/bold]: {chosen.summary}")
    try:
        result = asyncio.run(
            run_scenario(
                chosen,
                example=example,
                repository=candidate_repository,
                timeout_s=timeout_seconds,
                view=lambda rollout, traffic: live_view(chosen, rollout, traffic),
                console=out,
            )
        )
    except (TritonUnavailableError, PrometheusNotInstalledError, ValueError, OSError) as error:
        raise fail(str(error)) from None
    except KeyboardInterrupt:
        typer.echo("\ninterrupted: the sandbox was stopped and cleaned up", err=True)
        raise typer.Exit(130) from None
    print_summary(result, out)
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        out.print(f"result written to {json_path}")
    raise typer.Exit(0 if result.outcome in ("Promoted", "RolledBack") else 1)


@app.command()
def replay(
    scenario: Annotated[
        str, typer.Option(help="healthy, or a fault kind such as nan-burst or errors-10x.")
    ] = "healthy",
    seed: Annotated[int, typer.Option(help="Seed of the generated scenario.")] = 7,
) -> None:
    """Replay one generated rollout through the state machine alone and show its decisions."""
    from gelu_rollout.cli.replay_demo import run_demo

    try:
        code = run_demo(scenario, seed, out)
    except ValueError as error:
        raise fail(str(error)) from None
    raise typer.Exit(code)


if __name__ == "__main__":  # pragma: no cover
    app(prog_name="gelu-rollout")
