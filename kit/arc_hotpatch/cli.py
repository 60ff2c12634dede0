"""``python -m arc_hotpatch``: simulate, serve, twin, plan (SPEC §5)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import fields, replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from core.policy import Policy, SettingError, load_policy
from core.vocabulary import FinalState, InstallState

from .clocks import DEFAULT_START
from .policy_flags import policy_flags_help, policy_from_environment, policy_from_flags

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Enroll Azure Arc-enabled Windows Server 2025 machines in Hotpatch, safely.",
)
# Results (the summary, where the report went, what `serve` listens on) go to stdout; progress and errors to
# stderr, so a script can read one without the other. soft_wrap: URLs and keys stay on one line.
console = Console(stderr=True, soft_wrap=True)
out = Console(soft_wrap=True)
POLICY_CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
FLEET_FLAGS = ("subscriptions",)  # simulate and serve: --subscriptions K is the simulated fleet's, not the policy's

MachinesOpt = Annotated[int | None, typer.Option("--machines", help="Generate a fleet of N machines.")]
SubscriptionsOpt = Annotated[int, typer.Option("--subscriptions", help="Subscriptions of a generated fleet.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the generated fleet and of injected faults.")]
ScenarioOpt = Annotated[Path | None, typer.Option("--scenario", help="Scenario file (JSON, SPEC §5).")]
FaultsOpt = Annotated[str, typer.Option("--faults", help="none | chaos | FILE (JSON): injected faults.")]
START_YEARS = (2000, 2100)  # a rehearsal's months; at year 1 or 9999 the clocks' date arithmetic overflows


def parse_start(text: str | None) -> datetime:
    """``--start``: a date (``2026-02-02``, at the default start's time of day) or an ISO date and time (UTC unless
    it says otherwise), in the years START_YEARS; absent, the fixed default start, so runs stay reproducible."""
    if not text:
        return DEFAULT_START
    try:
        if len(text.strip()) == 10:
            day = date.fromisoformat(text.strip())
            moment = DEFAULT_START.replace(year=day.year, month=day.month, day=day.day)
        else:
            moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise fail(f"--start {text!r}: expected a date such as 2026-02-02 or a time such as 2026-02-02T08:00:00Z") \
            from None
    if not START_YEARS[0] <= moment.year <= START_YEARS[1]:  # checked before converting: that may overflow too
        raise fail(f"--start {text!r}: expected a date in the years {START_YEARS[0]}-{START_YEARS[1]}")
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


HtmlOpt = Annotated[Path | None, typer.Option("--html", help="Write the report as one self-contained HTML page.")]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Write the report as CSV, one row per machine.")]
StartOpt = Annotated[str | None, typer.Option(
    "--start", help=f"Simulated start date (default {DEFAULT_START:%Y-%m-%d}): places the rehearsal in any month.")]
LOOPBACK = "127.0.0.1"
MAX_PORT = 65535


def fail(message: str, code: int = 2) -> typer.Exit:
    """One line ``error: <message>`` on stderr; the caller raises the returned Exit (2: bad input)."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
    return typer.Exit(code=code)


def check_port(port: int) -> int:
    """``--port``: 0-65535, and (unless 0) free on loopback now; a one-line error otherwise."""
    if not 0 <= port <= MAX_PORT:
        raise fail(f"--port {port}: expected 0-{MAX_PORT}")
    if port:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers bind: TIME_WAIT is free
            try:
                probe.bind((LOOPBACK, port))
            except OSError as exc:
                raise port_error(port, exc) from None
    return port


def port_error(port: int, exc: OSError) -> typer.Exit:
    if exc.errno == errno.EADDRINUSE:
        return fail(f"port {port} on {LOOPBACK} is in use")
    return fail(f"port {port} on {LOOPBACK}: {exc.strerror or exc}")


@contextlib.contextmanager
def port_errors(port: int) -> Iterator[None]:
    """A server that still finds its port taken (another process got there after ``check_port``): one line."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
            raise
        raise port_error(port, exc) from None


@contextlib.contextmanager
def _reported(*errors: type[Exception]) -> Iterator[None]:
    """These errors (bad input found while starting) end the command with their one line."""
    try:
        yield
    except errors as exc:
        raise fail(str(exc)) from None


PortOpt = Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free port).", callback=check_port)]
MAX_SPEED = 1e6  # a simulated year in about 30 s; beyond it (or inf, nan) the clock's arithmetic overflows


def check_speed(speed: float) -> float:
    """``--speed``: a number > 0 and at most MAX_SPEED; a one-line error otherwise (before anything starts)."""
    if not 0 < speed <= MAX_SPEED:  # nan fails every comparison
        raise fail(f"--speed {speed}: expected a number > 0 and at most {MAX_SPEED:,.0f}")
    return speed


SpeedOpt = Annotated[float, typer.Option("--speed", help="Simulated seconds per real second.", callback=check_speed)]
OUTPUT_FLAGS = ("--report", "--html", "--csv")


def outputs(report: Path | None, html: Path | None, csv: Path | None) -> list[tuple[str, Path]]:
    """The report files a run writes, with the flag that named each."""
    return [(flag, path) for flag, path in zip(OUTPUT_FLAGS, (report, html, csv), strict=True) if path is not None]


def check_outputs(report: Path | None, html: Path | None, csv: Path | None) -> None:
    """Before a run: every report file can be written (missing folders can be made), so a long run does not fail
    at its last step; a one-line error naming the flag otherwise. Leaves nothing behind."""
    for flag, path in outputs(report, html, csv):
        try:
            if path.is_dir():
                raise fail(f"{flag} {path}: is a folder; expected a file name")
            folder = path.parent
            while not folder.exists() and folder != folder.parent:
                folder = folder.parent
            if not folder.is_dir():
                raise fail(f"{flag} {path}: {folder} is not a folder")
            if folder != path.parent:  # the missing folders are made when the report is written
                if not os.access(folder, os.W_OK | os.X_OK):
                    raise fail(f"{flag} {path}: cannot create folders in {folder}")
                continue
            if path.exists() and not path.is_file():
                continue  # a device or a pipe (/dev/stdout): opening it now could block or consume it
            existed = path.exists()
            with path.open("a", encoding="utf-8"):  # appends nothing: an existing file is unchanged until the end
                pass
            if not existed:
                path.unlink()
        except OSError as exc:
            raise fail(f"{flag} {path}: cannot be written ({exc.strerror or exc})") from None


def build_fleet(machines: int | None, subscriptions: int, seed: int, scenario: Path | None) -> Any:
    """The fleet: a scenario file, a generated fleet, or the embedded default fleet."""
    from .twin.fleet import MAX_MACHINES, MAX_SUBSCRIPTIONS, ScenarioError, default_fleet, generate_fleet, load_scenario

    try:
        if scenario is not None and machines is not None:
            raise ScenarioError("give either --scenario or --machines, not both")
        if scenario is not None:
            return load_scenario(scenario)
        if machines is not None:
            if machines < 1 or subscriptions < 1:
                raise ScenarioError("--machines and --subscriptions must be >= 1")
            if machines > MAX_MACHINES:
                raise ScenarioError(f"--machines {machines}: expected at most {MAX_MACHINES:,}")
            if subscriptions > MAX_SUBSCRIPTIONS:
                raise ScenarioError(f"--subscriptions {subscriptions}: expected at most {MAX_SUBSCRIPTIONS:,}")
            return generate_fleet(machines=machines, subscriptions=subscriptions, seed=seed)
        return default_fleet()
    except (ScenarioError, OSError) as exc:
        raise fail(str(exc)) from None


def build_policy(ctx: typer.Context, base: Policy | None = None) -> Policy:
    try:
        return policy_from_flags(base or load_policy({}), ctx.args)
    except SettingError as exc:
        raise fail(str(exc)) from None


# What the fleet twin decides in simulate and serve (its endpoint and token); every other HOTPATCH_* setting
# found in the environment is honoured, CLI flags override it.
TWIN_DECIDED = frozenset({"arm_endpoint", "cloud"})
WEBHOOK_ENV = "HOTPATCH_ESCALATION_WEBHOOK"
WEBHOOK_FLAG = "--escalation-webhook"
_POLICY_FIELDS = {f.name for f in fields(Policy)}


def take_webhook(args: list[str]) -> tuple[str | None, list[str]]:
    """``--escalation-webhook URL`` (or ``=URL``) out of ``args``: (the URL or None, the other args).

    The app's ``escalate`` activity reads the URL from the app setting HOTPATCH_ESCALATION_WEBHOOK
    when it runs, so a rehearsal puts the flag's URL there for the run (see ``webhook_environment``).
    """
    rest: list[str] = []
    webhook: str | None = None
    index = 0
    while index < len(args):
        item = args[index]
        if item == WEBHOOK_FLAG:
            if index + 1 >= len(args):
                raise fail(f"{WEBHOOK_FLAG}: expected a URL after the flag")
            webhook, index = args[index + 1], index + 2
            continue
        if item.startswith(WEBHOOK_FLAG + "="):
            webhook = item.partition("=")[2]
        else:
            rest.append(item)
        index += 1
    if webhook is not None and webhook:
        from urllib.parse import urlparse

        parsed = urlparse(webhook)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise fail(f"invalid setting {WEBHOOK_FLAG}={webhook[:40]!r}: expected an http(s) URL, or empty")
    return webhook, rest


def warn_unknown_settings() -> None:
    """A HOTPATCH_* variable that is no setting (a typo leaves the default in force): one warning line each."""
    from core.policy import unknown_settings

    for name in unknown_settings(os.environ):
        console.print(f"[yellow]warning:[/] {name} is not a HOTPATCH setting: ignored (a typo?)", highlight=False)


def rehearsal_policy(ctx: typer.Context, base: Policy, fleet: Any) -> tuple[Policy, str | None]:
    """simulate's and serve's policy: ``base``, then the HOTPATCH_* app settings of the environment (but
    the ARM endpoint, which the twin decides), then the CLI flags; and the escalation webhook of a flag.

    HOTPATCH_SUBSCRIPTIONS (or --subscriptions) may name some of the twin's subscriptions (the others are
    then out of scope); one the twin does not have is an error.
    """
    from .runner import twin_scope

    webhook, args = take_webhook(list(ctx.args))
    warn_unknown_settings()
    try:
        policy = policy_from_flags(policy_from_environment(base, os.environ, ignore=TWIN_DECIDED), args)
        twin_scope(policy.subscriptions, fleet.subscription_ids)
    except SettingError as exc:
        raise fail(str(exc)) from None
    except ValueError as exc:
        origin = "--subscriptions" if "--subscriptions" in " ".join(args) else "HOTPATCH_SUBSCRIPTIONS"
        raise fail(f"{origin}: {exc}") from None
    if webhook is not None and "escalation_webhook" in _POLICY_FIELDS:
        policy = replace(policy, escalation_webhook=webhook)  # as the app's own load_policy reads the setting
    return policy, webhook


@contextlib.contextmanager
def webhook_environment(webhook: str | None) -> Iterator[None]:
    """HOTPATCH_ESCALATION_WEBHOOK set to a flag's URL for the run (restored after); untouched without one."""
    from .runner import scoped_environment

    with scoped_environment({} if webhook is None else {WEBHOOK_ENV: webhook}):
        yield


def check_faults(faults: str) -> str:
    from .twin.faults import load_faults

    try:
        load_faults(faults)
    except (ValueError, OSError) as exc:
        raise fail(f"--faults: {exc}") from None
    return faults


SIMULATE_BASE = replace(Policy(), reboot_policy="auto")  # a rehearsal should not wait for a person


@app.command(context_settings=POLICY_CONTEXT, epilog=policy_flags_help(SIMULATE_BASE, without=FLEET_FLAGS))
def simulate(
    ctx: typer.Context,
    machines: MachinesOpt = None,
    subscriptions: SubscriptionsOpt = 1,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = None,
    faults: FaultsOpt = "none",
    report: Annotated[Path | None, typer.Option("--report", help="Write the report JSON here.")] = None,
    start: StartOpt = None,
    html: HtmlOpt = None,
    csv: CsvOpt = None,
    install_hotpatches: Annotated[bool, typer.Option(
        "--install-hotpatches", help="After the rollout, install this month's hotpatches (no reboot); report that.")]
    = False,
) -> None:
    """Rehearse a rollout: the fleet twin + the local durable host on a virtual clock.

    Without --machines or --scenario the embedded default fleet is used. The reboot
    policy defaults to auto here (the app's own default, approval, would wait for a
    person); pass --reboot-policy to rehearse another. App settings (HOTPATCH_*) in the
    environment are read first (the twin decides only the ARM endpoint); flags override them.
    """
    from .runner import RolloutFailed, run_simulation

    fleet = build_fleet(machines, subscriptions, seed, scenario)
    policy, webhook = rehearsal_policy(ctx, SIMULATE_BASE, fleet)
    check_faults(faults)
    started_at = parse_start(start)
    check_outputs(report, html, csv)
    console.print(
        f"Simulating [bold]{len(fleet.machines)}[/] machines in {len(fleet.subscription_ids)} subscription(s): "
        f"reboot policy [bold]{policy.reboot_policy}[/], workaround [bold]{policy.workaround_mode}[/]"
        f"{', [bold yellow]dry run[/]' if policy.dry_run else ''}, waves {','.join(map(str, policy.waves))}, "
        f"faults {faults}, from {started_at:%Y-%m-%d %H:%M} UTC"
    )
    try:
        with webhook_environment(webhook):
            result = _run_with_progress(lambda progress: run_simulation(fleet, policy, faults=faults,
                                                                       progress=progress, start=started_at,
                                                                       install_hotpatches=install_hotpatches),
                                        len(fleet.machines))
    except RolloutFailed as exc:
        raise failed_run("rollout", exc, exc.report, report, html, csv) from None
    print_summary(result)
    _write_report(report, result, html, csv)


PROGRESS_LINE_EVERY_S = 5.0


def _run_with_progress(job: Any, total: int | None) -> dict[str, Any]:
    """Run ``job(progress)`` under a progress bar on a terminal, else with a ``progress:`` line whenever
    the count changed (at most every PROGRESS_LINE_EVERY_S, and the last); ``total`` None: not known
    up front (plan)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not console.is_terminal:
        started = time.monotonic()
        last: dict[str, Any] = {"shown": None, "at": 0.0, "seen": None}

        def show(done: int, known: int) -> None:
            of = known or total
            line = f"progress: {done}/{of} machines done" if of else f"progress: {done} machines done"
            last["seen"] = line
            now = time.monotonic()
            if line != last["shown"] and (last["shown"] is None or now - last["at"] >= PROGRESS_LINE_EVERY_S):
                console.print(f"{line} ({now - started:.0f} s)", highlight=False)
                last["shown"], last["at"] = line, now

        try:
            return job(show)
        finally:
            if last["seen"] is not None and last["seen"] != last["shown"]:
                console.print(f"{last['seen']} ({time.monotonic() - started:.0f} s)", highlight=False)

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
    if report.get("enrollment"):
        enrolled = report["enrollment"]["summary"]["by_state"]
        out.print("enrollment: " + ", ".join(f"{state} {count}" for state, count in sorted(enrolled.items())))
    for state in dict.fromkeys([*FinalState, *InstallState]):
        count = summary["by_state"].get(state.value, 0)
        if not count:
            continue
        reasons: dict[str, int] = {}
        for row in report["machines"]:
            if row["state"] == state.value:
                reasons[row["reason"]] = reasons.get(row["reason"], 0) + 1
        table.add_row(state.value, str(count), ", ".join(f"{r} {n}" for r, n in sorted(reasons.items())))
    out.print(table)
    out.print(f"reboots: {summary['reboots']}   escalations: {summary['escalations']}")
    forecast = {kind: sum(r.get("next_update") == kind for r in report["machines"])
                for kind in ("hotpatch", "reboot", "unknown")}
    if report["machines"]:
        day = next((r["next_update_detail"].split(" ", 1)[0] for r in report["machines"]
                    if r.get("next_update_detail")), "the next")
        enrolled_reboots = sum(r.get("next_update") == "reboot" and r["state"] == FinalState.HOTPATCH_ENABLED.value
                               for r in report["machines"])
        out.print(f"next update ({day}): hotpatch {forecast['hotpatch']}, reboot {forecast['reboot']} "
                  f"({enrolled_reboots} of them enrolled), unknown {forecast['unknown']}")
    planned = [r for r in report["machines"] if r["state"] == FinalState.PLANNED.value]
    if planned:
        counts = {a: sum(a in r["actions"] for r in planned) for a in ("enable_vsm", "licensing_workaround",
                                                                        "reboot", "enable_hotpatch")}
        out.print("dry run, the rollout would: " + ", ".join(f"{a} on {n}" for a, n in counts.items()))
        for row in planned:
            if row.get("detail"):
                out.print(f"  [yellow]note[/] {row['name']}: {row['detail']}")
    escalated = [r for r in report["machines"] if r["state"] == FinalState.ESCALATED.value]
    for row in escalated[:10]:
        out.print(f"  [yellow]escalated[/] {row['name']}: {row['reason']} {row.get('detail', '')}")
    if len(escalated) > 10:
        out.print(f"  ... and {len(escalated) - 10} more (see the report)")
    for error in (report.get("rollout") or {}).get("errors") or []:
        out.print(f"  [red]not rolled out[/] subscription {error['subscription_id']}: {error['error']}")
    metrics = report.get("metrics")
    if metrics:
        out.print(
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
    start: StartOpt = None,
    ca_file: Annotated[Path | None, typer.Option(
        "--ca-file", help="Write the twin's CA certificate (PEM) here (default: a file in the temp folder).")] = None,
    no_tls: Annotated[bool, typer.Option("--no-tls", help="Serve plain HTTP (curl only: SDK clients need TLS).")]
    = False,
) -> None:
    """The fleet twin alone: an ARM endpoint on loopback for any Azure SDK client or curl."""
    from .twin.cli import run_twin_cli
    from .twin.tls import CaFileError

    fleet = build_fleet(machines, subscriptions, seed, scenario)
    with port_errors(port), _reported(CaFileError):
        run_twin_cli(port=port, fleet=fleet, faults=check_faults(faults), speed=speed, start=parse_start(start),
                     tls=not no_tls, ca_file=str(ca_file) if ca_file else None)


@app.command(context_settings=POLICY_CONTEXT, epilog=policy_flags_help(without=FLEET_FLAGS))
def serve(
    ctx: typer.Context,
    port: PortOpt = 7071,
    machines: MachinesOpt = None,
    subscriptions: SubscriptionsOpt = 1,
    seed: SeedOpt = 0,
    scenario: ScenarioOpt = None,
    faults: FaultsOpt = "none",
    speed: SpeedOpt = 60.0,
    auth: Annotated[bool, typer.Option(
        "--auth/--no-auth", help="Require function keys on /api routes as Azure does (func start, and serve by "
        "default, do not enforce them locally).")] = False,
    start: StartOpt = None,
    app_spec: Annotated[str, typer.Option(
        "--app", help="The FunctionApp to serve, as module:attribute (imported from the current folder).")]
    = "function_app:app",
    with_twin: Annotated[bool, typer.Option(
        "--twin", help="Start the fleet twin for another app too (it always starts for the project's app).")] = False,
) -> None:
    """The twin + the local durable host serving the app's HTTP routes, like `func start`.

    Any Python v2 FunctionApp with --app module:attribute (the fleet twin starts for the project's own app, or
    with --twin). Like func start, the Values of the app folder's local.settings.json become app settings
    (the environment wins).

    App settings (HOTPATCH_*) in the environment are honoured (the twin decides only the ARM
    endpoint and token); flags override them. HOTPATCH_SUBSCRIPTIONS may name some of the twin's
    subscriptions: the others are then out of scope. Prints the twin's URL as `Fleet twin: <url>`.
    """
    from .apps import AppError, app_folder, apply_local_settings, is_project_app, load_app
    from .runner import restored_environment
    from .serving import run_serve, run_serve_app

    logging.getLogger("arc_hotpatch").setLevel(os.environ.get("HOTPATCH_LOG_LEVEL", "INFO").upper())
    started_at = parse_start(start)
    with restored_environment(prefix=""):  # local.settings.json's Values are app settings for this run only
        with _reported(AppError):
            folder = app_folder(app_spec)
            own_app = is_project_app(app_spec, folder)
            applied = apply_local_settings(folder)
            served = load_app(app_spec)
        if applied:
            out.print(f"App settings from local.settings.json: {', '.join(sorted(applied))}")
        if not (own_app or with_twin):
            if ctx.args:
                raise fail(f"{' '.join(ctx.args)}: policy flags apply to the project's app (or with --twin)")
            with port_errors(port):
                run_serve_app(app=served, port=port, speed=speed, no_auth=not auth, console=out,
                              start=started_at)
            return
        fleet = build_fleet(machines, subscriptions, seed, scenario)
        policy, webhook = rehearsal_policy(ctx, Policy(), fleet)
        with webhook_environment(webhook), port_errors(port):
            run_serve(fleet=fleet, policy=policy, port=port, faults=check_faults(faults), speed=speed,
                      no_auth=not auth, console=out, start=started_at, app=served)


@app.command(context_settings=POLICY_CONTEXT, epilog=policy_flags_help())
def plan(
    ctx: typer.Context,
    report: Annotated[Path | None, typer.Option("--report", help="Write the report JSON here.")] = None,
    html: HtmlOpt = None,
    csv: CsvOpt = None,
) -> None:
    """A dry run against real Azure (DefaultAzureCredential): what the rollout would do. Changes nothing.

    Scope it with --subscriptions ID[,ID] and --resource-group NAME; --cloud or --arm-endpoint pick the cloud.
    App settings (HOTPATCH_*) in the environment are read first.
    """
    from .runner import PlanError, run_plan

    try:
        warn_unknown_settings()
        policy = replace(build_policy(ctx, load_policy(os.environ)), dry_run=True)
    except SettingError as exc:
        raise fail(str(exc)) from None
    check_outputs(report, html, csv)
    scope = ", ".join(policy.subscriptions) or "every readable subscription"
    console.print(f"Plan (dry run) against {policy.resolved_arm_endpoint}: {scope}", highlight=False)
    try:
        result = _run_with_progress(lambda progress: run_plan(policy, progress=progress), None)
    except PlanError as exc:
        raise failed_run("plan", exc, exc.report, report, html, csv) from None
    print_summary(result)
    errors = (result.get("rollout") or {}).get("errors") or []
    if errors:
        result["error"] = f"{len(errors)} subscription(s) could not be read"
    _write_report(report, result, html, csv)
    if errors:
        first = errors[0]
        raise fail(f"plan incomplete: {len(errors)} subscription(s) could not be read "
                   f"({first['subscription_id']}: {str(first['error']).splitlines()[0][:200]})", code=1)


def failed_run(what: str, exc: Exception, finished: dict[str, Any], path: Path | None, html: Path | None,
               csv: Path | None) -> typer.Exit:
    """A run that failed: the summary of what it ``finished`` and the report files (with the error), then one
    line ``<what> failed: <the cause's first line>`` (exit 1); the caller raises the returned Exit."""
    from .runner import first_line

    failed = {**finished, "error": str(exc)}
    if failed.get("summary"):
        print_summary(failed)
    _write_report(path, failed, html, csv)
    return fail(f"{what} failed: {first_line(exc)}", code=1)


def _write_report(path: Path | None, report: dict[str, Any], html: Path | None = None,
                  csv: Path | None = None) -> None:
    """The report as JSON (``--report``), one self-contained HTML page (``--html``) and CSV (``--csv``); a file
    that cannot be written after all (``check_outputs`` passed) ends the command with one line (exit 1)."""
    from core.report_views import report_csv, report_html

    renderers = {"--report": lambda r: json.dumps(r, indent=2) + "\n", "--html": report_html, "--csv": report_csv}
    for flag, target in outputs(path, html, csv):
        text = renderers[flag](report)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        except OSError as exc:
            raise fail(f"{flag} {target}: cannot be written ({exc.strerror or exc})", code=1) from None
        out.print(f"Report written to {target}")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill <pid>``, a service manager): the same orderly stop as Ctrl-C, so ``serve`` and ``twin``
    stop the twin, the host and Azurite and remove their temp files, and ``simulate`` stops its servers."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated


def main() -> None:
    signal.signal(signal.SIGTERM, _terminate)
    # Escalations also appear in the summary; HOTPATCH_LOG_LEVEL=INFO shows every step's log line.
    logging.basicConfig(
        level=os.environ.get("HOTPATCH_LOG_LEVEL", "ERROR").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        app()
    except Terminated:
        sys.exit(128 + signal.SIGTERM)
    except KeyboardInterrupt:
        sys.exit(130)
