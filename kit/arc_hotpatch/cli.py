"""``python -m arc_hotpatch``: simulate, serve, twin, plan (SPEC §5)."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from core.policy import Policy, SettingError, load_policy
from core.vocabulary import FinalState

from .policy_flags import policy_flags_help, policy_from_flags

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Enroll Azure Arc-enabled Windows Server 2025 machines in Hotpatch, safely.",
)
console = Console(stderr=True, soft_wrap=True)  # URLs and keys stay on one line
POLICY_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}

MachinesOpt = Annotated[int | None, typer.Option("--machines", help="Generate a fleet of N machines.")]
SubscriptionsOpt = Annotated[int, typer.Option("--subscriptions", help="Subscriptions of a generated fleet.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the generated fleet and of injected faults.")]
ScenarioOpt = Annotated[Path | None, typer.Option("--scenario", help="Scenario file (JSON, SPEC §5).")]
FaultsOpt = Annotated[str, typer.Option("--faults", help="none | chaos | FILE (JSON): injected faults.")]
SpeedOpt = Annotated[float, typer.Option("--speed", help="Simulated seconds per real second.")]
PortOpt = Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port).")]


def fail(message: str) -> typer.Exit:
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code=2)


def build_fleet(machines: int | None, subscriptions: int, seed: int, scenario: Path | None) -> Any:
    """The fleet: a scenario file, a generated fleet, or the embedded default fleet."""
    from .twin.fleet import ScenarioError, default_fleet, generate_fleet, load_scenario

    try:
        if scenario is not None and machines is not None:
            raise ScenarioError("give either --scenario or --machines, not both")
        if scenario is not None:
            return load_scenario(scenario)
        if machines is not None:
            if machines < 1 or subscriptions < 1:
                raise ScenarioError("--machines and --subscriptions must be >= 1")
            return generate_fleet(machines=machines, subscriptions=subscriptions, seed=seed)
        return default_fleet()
    except (ScenarioError, OSError) as exc:
        raise fail(str(exc)) from None


def build_policy(ctx: typer.Context, base: Policy | None = None) -> Policy:
    try:
        return policy_from_flags(base or load_policy({}), ctx.args)
    except SettingError as exc:
        raise fail(str(exc)) from None


def check_faults(faults: str) -> str:
    from .twin.faults import load_faults

    try:
        load_faults(faults)
    except (ValueError, OSError) as exc:
        raise fail(f"--faults: {exc}") from None
    return faults


SIMULATE_BASE = replace(Policy(), reboot_policy="auto")  # a rehearsal should not wait for a person


@app.command(context_settings=POLICY_CONTEXT, epilog=policy_flags_help(SIMULATE_BASE))
def simulate(
    ctx: typer.Context,
    machines: MachinesOpt = None,
    subscriptions: SubscriptionsOpt = 1,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = None,
    faults: FaultsOpt = "none",
    report: Annotated[Path | None, typer.Option("--report", help="Write the report JSON here.")] = None,
) -> None:
    """Rehearse a rollout: the fleet twin + the local durable host on a virtual clock.

    Without --machines or --scenario the embedded default fleet is used. The reboot
    policy defaults to auto here (the app's own default, approval, would wait for a
    person); pass --reboot-policy to rehearse another.
    """
    from .runner import run_simulation

    fleet = build_fleet(machines, subscriptions, seed, scenario)
    policy = build_policy(ctx, SIMULATE_BASE)
    check_faults(faults)
    console.print(
        f"Simulating [bold]{len(fleet.machines)}[/] machines in {len(fleet.subscription_ids)} subscription(s): "
        f"reboot policy [bold]{policy.reboot_policy}[/], workaround [bold]{policy.workaround_mode}[/]"
        f"{', [bold yellow]dry run[/]' if policy.dry_run else ''}, waves {','.join(map(str, policy.waves))}, "
        f"faults {faults}"
    )
    result = _run_with_progress(lambda progress: run_simulation(fleet, policy, faults=faults, progress=progress),
                                len(fleet.machines))
    print_summary(result)
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"Report written to {report}")


def _run_with_progress(job: Any, total: int | None) -> dict[str, Any]:
    """Run ``job(progress)`` under a progress bar; ``total`` None: not known up front (plan)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("machines done"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=not console.is_terminal,
    ) as bar:
        task = bar.add_task("rollout", total=total)
        return job(lambda done, _total: bar.update(task, completed=done, total=total or None))


def print_summary(report: dict[str, Any]) -> None:
    summary = report["summary"]
    table = Table(title="Rollout summary", show_footer=True)
    table.add_column("state", footer="total")
    table.add_column("machines", justify="right", footer=str(summary["machines"]))
    table.add_column("reasons")
    for state in FinalState:
        count = summary["by_state"].get(state.value, 0)
        if not count:
            continue
        reasons: dict[str, int] = {}
        for row in report["machines"]:
            if row["state"] == state.value:
                reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        table.add_row(state.value, str(count), ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())))
    console.print(table)
    console.print(f"reboots: {summary['reboots']}   escalations: {summary['escalations']}")
    planned = [r for r in report["machines"] if r["state"] == FinalState.PLANNED.value]
    if planned:
        counts = {a: sum(a in r["actions"] for r in planned) for a in ("enable_vsm", "licensing_workaround",
                                                                        "reboot", "enable_hotpatch")}
        console.print("dry run, the rollout would: " + ", ".join(f"{a} on {n}" for a, n in counts.items()))
        for row in planned:
            if row.get("detail"):
                console.print(f"  [yellow]note[/] {row['name']}: {row['detail']}")
    escalated = [r for r in report["machines"] if r["state"] == FinalState.ESCALATED.value]
    for row in escalated[:10]:
        console.print(f"  [yellow]escalated[/] {row['name']}: {row['reason']} {row.get('detail', '')}")
    if len(escalated) > 10:
        console.print(f"  ... and {len(escalated) - 10} more (see the report)")
    for error in (report.get("rollout") or {}).get("errors") or []:
        console.print(f"  [red]not rolled out[/] subscription {error['subscription_id']}: {error['error']}")
    metrics = report.get("metrics")
    if metrics:
        console.print(
            f"virtual time {metrics['virtual_makespan_s'] / 3600:.1f} h in {metrics['wall_s']:.1f} s real; "
            f"ARM requests {metrics['arm_requests']} ({metrics['throttled_responses']} throttled); "
            f"orchestrations {metrics['orchestrations']}, largest history {metrics['max_history_events']} events"
        )


@app.command()
def twin(
    port: PortOpt = 0,
    machines: MachinesOpt = None,
    subscriptions: SubscriptionsOpt = 1,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = None,
    faults: FaultsOpt = "none",
    speed: SpeedOpt = 60.0,
) -> None:
    """The fleet twin alone: an ARM endpoint on loopback for any Azure SDK client or curl."""
    from .twin.cli import run_twin_cli

    fleet = build_fleet(machines, subscriptions, seed, scenario)
    run_twin_cli(port=port, fleet=fleet, faults=check_faults(faults), speed=_speed(speed))


def _speed(speed: float) -> float:
    if speed <= 0:
        raise fail(f"--speed must be > 0, got {speed}")
    return speed


@app.command(context_settings=POLICY_CONTEXT, epilog=policy_flags_help())
def serve(
    ctx: typer.Context,
    port: PortOpt = 7071,
    machines: MachinesOpt = None,
    subscriptions: SubscriptionsOpt = 1,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = None,
    faults: FaultsOpt = "none",
    speed: SpeedOpt = 60.0,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Do not require function keys.")] = False,
) -> None:
    """The twin + the local durable host serving the app's HTTP routes, like `func start`."""
    from .serving import run_serve

    logging.getLogger("arc_hotpatch").setLevel(os.environ.get("HOTPATCH_LOG_LEVEL", "INFO").upper())

    fleet = build_fleet(machines, subscriptions, seed, scenario)
    policy = build_policy(ctx)
    run_serve(fleet=fleet, policy=policy, port=port, faults=check_faults(faults), speed=_speed(speed),
              no_auth=no_auth, console=console)


@app.command(context_settings=POLICY_CONTEXT, epilog=policy_flags_help())
def plan(
    ctx: typer.Context,
    report: Annotated[Path | None, typer.Option("--report", help="Write the report JSON here.")] = None,
) -> None:
    """A dry run against real Azure (DefaultAzureCredential): what the rollout would do. Changes nothing.

    Scope it with --subscriptions ID[,ID] and --resource-group NAME; --cloud or --arm-endpoint pick the cloud.
    App settings (HOTPATCH_*) in the environment are read first.
    """
    from .runner import run_plan

    try:
        policy = replace(build_policy(ctx, load_policy(os.environ)), dry_run=True)
    except SettingError as exc:
        raise fail(str(exc)) from None
    result = _run_with_progress(lambda progress: run_plan(policy, progress=progress), None)
    print_summary(result)
    if report is not None:
        report.write_text(json.dumps(result, indent=2) + "\n")
        console.print(f"Report written to {report}")


def main() -> None:
    # Escalations also appear in the summary; HOTPATCH_LOG_LEVEL=INFO shows every step's log line.
    logging.basicConfig(
        level=os.environ.get("HOTPATCH_LOG_LEVEL", "ERROR").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
