"""The lab's commands, added to ``gelu-rollout`` as a plugin: demo, replay, bench."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from gelu_lab.bench.decisions import benchmark
from gelu_lab.bench.generate import FAMILIES, generate_suite
from gelu_lab.bench.report import print_bench_report, print_variants_report
from gelu_lab.bench.scale import (
    DEFAULT_INTERVAL_SECONDS,
    DEFAULT_ROLLOUTS,
    DEFAULT_SCRAPE_INTERVAL_SECONDS,
    DEFAULT_TICKS,
    benchmark_scale,
    print_scale_report,
)
from gelu_lab.bench.scenario import ScenarioError, load_scenarios, save_scenarios
from gelu_lab.bench.variants import benchmark_variants
from gelu_lab.demo.replay import run_demo
from gelu_lab.demo.run import run_scenario
from gelu_lab.demo.scenarios import SCENARIOS
from gelu_lab.demo.view import live_view, print_next_steps, print_summary
from gelu_lab.sandbox.prometheus import PrometheusNotInstalledError
from gelu_lab.sandbox.shutdown import Stopped, die_with_parent, run_until_stopped
from gelu_lab.sandbox.triton import TritonStartError, TritonUnavailableError
from gelu_rollout.cli.output import fail, out
from gelu_rollout.cli.report import render_report

FAMILY_CHOICES = ", ".join(FAMILIES)
# The generated suite's options, shared by the commands that generate it.
SeedOption = Annotated[int, typer.Option(help="Seed of the generated suite.")]
HealthyOption = Annotated[int, typer.Option(help="Healthy scenarios to generate per family.")]
PerFaultOption = Annotated[
    int, typer.Option(help="Scenarios to generate per fault kind and family.")
]
FamilyOption = Annotated[
    list[str] | None,
    typer.Option(help=f"Scenario family to generate (repeatable): {FAMILY_CHOICES}."),
]

bench_app = typer.Typer(help="Benchmarks that print figures.", no_args_is_help=True)
app = typer.Typer()
app.add_typer(bench_app, name="bench")


def register(target: typer.Typer) -> None:
    """Add the lab's commands to the ``gelu-rollout`` app (the plugin's entry point)."""
    target.registered_commands.extend(app.registered_commands)
    target.registered_groups.extend(app.registered_groups)


@bench_app.command("decisions")
def bench_decisions(
    scenarios: Annotated[
        Path | None,
        typer.Option(help="Run the scenario files (*.json) in this folder instead of generating."),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    seed: SeedOption = 20261125,
    healthy: HealthyOption = 320,
    per_fault: PerFaultOption = 30,
    family: FamilyOption = None,
    workers: Annotated[int | None, typer.Option(help="Worker processes (default: CPUs).")] = None,
) -> None:
    """False rollbacks, detection and delay: gelu-rollout vs Flagger- and Kayenta-style."""

    try:
        suite = (
            load_scenarios(scenarios)
            if scenarios is not None
            else generate_suite(
                seed=seed, healthy=healthy, per_fault=per_fault, families=family or tuple(FAMILIES)
            )
        )
    except (ScenarioError, ValueError) as error:
        raise fail(str(error)) from None
    report = benchmark(suite, workers=workers)
    report["source"] = str(scenarios) if scenarios is not None else f"generated (seed {seed})"
    print_bench_report(report, out)
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2) + "\n")
        out.print(f"report written to {json_path}")


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


@bench_app.command("scale")
def bench_scale(
    rollouts: Annotated[
        list[int] | None,
        typer.Option(
            min=1,
            help="Concurrent rollouts of one run (repeatable; default "
            + ", ".join(str(n) for n in DEFAULT_ROLLOUTS)
            + ").",
        ),
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
    ticks: Annotated[
        int, typer.Option(min=1, help="Analysis ticks of every rollout to measure per run.")
    ] = DEFAULT_TICKS,
    interval_seconds: Annotated[
        int, typer.Option(min=10, help="The rollouts' spec.analysis.intervalSeconds.")
    ] = DEFAULT_INTERVAL_SECONDS,
    timer_seconds: Annotated[
        float | None,
        typer.Option(
            min=0.5, help="The operator's timer (run --tick-seconds); default: the interval."
        ),
    ] = None,
    scrape_interval_seconds: Annotated[
        float, typer.Option(min=0.5, help="How often Prometheus scrapes the synthetic pods.")
    ] = DEFAULT_SCRAPE_INTERVAL_SECONDS,
    profile: Annotated[
        Path | None,
        typer.Option(help="Run the operator under cProfile; its stats go to PROFILE.<N>."),
    ] = None,
) -> None:
    """One operator, N concurrent rollouts, a real Prometheus: latency, queries, CPU, memory."""

    try:
        with out.status("starting") as status:
            report = benchmark_scale(
                rollouts or DEFAULT_ROLLOUTS,
                ticks=ticks,
                interval_seconds=interval_seconds,
                timer_seconds=timer_seconds,
                scrape_interval_seconds=scrape_interval_seconds,
                progress=status.update,
                profile=profile,
            )
    except (PrometheusNotInstalledError, RuntimeError, OSError) as error:
        raise fail(str(error)) from None
    print_scale_report(report, out)
    if json_path is not None:
        try:
            json_path.write_text(json.dumps(report, indent=2) + "\n")
        except OSError as error:
            raise fail(f"cannot write {json_path}: {error}") from None
        out.print(f"report written to {json_path}")


@bench_app.command("scenarios")
def bench_scenarios(
    directory: Annotated[Path, typer.Argument(help="Folder to write the scenario files into.")],
    seed: SeedOption = 20261125,
    healthy: HealthyOption = 320,
    per_fault: PerFaultOption = 30,
    family: FamilyOption = None,
) -> None:
    """Write the generated scenario suite as JSON files (docs/scenario-format.md)."""

    try:
        suite = generate_suite(
            seed=seed, healthy=healthy, per_fault=per_fault, families=family or tuple(FAMILIES)
        )
    except ValueError as error:
        raise fail(str(error)) from None
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
    report_path: Annotated[
        Path | None,
        typer.Option(
            "--report",
            help="Write the decision report (one self-contained HTML page) here.",
        ),
    ] = None,
) -> None:
    """Run a rollout end to end on the local sandbox: API, Triton pods, Prometheus, operator.

    SIGINT, SIGTERM, SIGHUP and the end of its parent (``make``, a shell) stop it cleanly: no
    process or temporary folder of the sandbox is left behind.
    """

    chosen = SCENARIOS.get(scenario)
    if chosen is None:
        raise fail(f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    die_with_parent()
    out.print(f"[bold]sandbox demo[/bold]: {chosen.summary}")
    try:
        result = run_until_stopped(
            run_scenario(
                chosen,
                example=example,
                repository=candidate_repository,
                timeout_s=timeout_seconds,
                view=lambda rollout, traffic: live_view(
                    chosen, rollout, traffic, fit=out.is_terminal
                ),
                console=out,
            )
        )
    except (
        TritonUnavailableError,
        PrometheusNotInstalledError,
        RuntimeError,
        ValueError,
        OSError,
    ) as error:
        raise fail(str(error)) from None
    except Stopped as stopped:
        with contextlib.suppress(OSError):  # a hung-up terminal takes no more output
            typer.echo(
                f"\ninterrupted by {stopped.signum.name}: the sandbox was stopped and cleaned up",
                err=True,
            )
        raise typer.Exit(stopped.exit_code) from None
    print_summary(result, out)
    if json_path is not None:
        json_path.write_text(json.dumps(result.to_dict(), indent=2) + "\n")
        out.print(f"result written to {json_path}")
    if report_path is not None and result.rollout:
        # From the object as last read: the outcome and every judged tick it kept.
        page = render_report(result.rollout, events=result.events, generated_at=datetime.now(UTC))
        report_path.write_text(page, encoding="utf-8")
        out.print(f"decision report written to {report_path}")
    out.print()
    print_next_steps(chosen, out)
    raise typer.Exit(0 if result.outcome in ("Promoted", "RolledBack") else 1)


@app.command()
def replay(
    scenario: Annotated[
        str, typer.Option(help="healthy, or a fault kind such as nan-burst or errors-10x.")
    ] = "healthy",
    seed: Annotated[int, typer.Option(help="Seed of the generated scenario.")] = 7,
) -> None:
    """Replay one generated rollout through the state machine alone and show its decisions."""

    try:
        code = run_demo(scenario, seed, out)
    except ValueError as error:
        raise fail(str(error)) from None
    raise typer.Exit(code)
