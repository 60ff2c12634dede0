"""Benchmark of the product's main job: a whole simulated rollout, at growing fleet sizes.

Each fleet size runs in a fresh child process (so peak RSS is that run's alone): the child
generates ``generate_fleet(machines, subscriptions, seed)``, runs ``run_simulation`` with the
default policy but ``reboot_policy="auto"`` (as ``./dev simulate`` does), checks that every
machine reached a final state, and prints one JSON line. The parent reads the child's
peak RSS from ``os.wait4`` (per-child ``ru_maxrss``), prints the JSON lines as they come
and a markdown table at the end.

    .venv/bin/python bench/bench_rollout.py                                  # 100, 500, 1000, 2000, 5000
    .venv/bin/python bench/bench_rollout.py --sizes 1000 --faults chaos      # 429/5xx handling
    .venv/bin/python bench/bench_rollout.py --sizes 100,500 --json-out runs.jsonl

The fleet-level orchestrations are ``rollout_orchestrator``, ``rollout_slice`` and
``rollout_chunk``; their largest history must not grow with the fleet (SPEC §3).
Exit status 1 if any run fails or leaves a machine without a final state.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from arc_hotpatch.twin.fleet import Fleet, MachineSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
FLEET_ORCHESTRATORS = ("rollout_orchestrator", "rollout_slice", "rollout_chunk")
MACHINE_ORCHESTRATOR = "machine_orchestrator"
DEFAULT_SIZES = "100,500,1000,2000,5000"


# ---------------------------------------------------------------------------------- child


def proc_status_kb(field: str) -> int:
    """A ``/proc/self/status`` field in kB (VmRSS, VmHWM); 0 where /proc is unavailable."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def final_state_problems(report: dict[str, Any], expected_ids: set[str]) -> list[str]:
    """Machines missing from the report, reported twice, or without a final state."""
    from core.vocabulary import FinalState

    final_states = {state.value for state in FinalState}
    rows = report["machines"]
    seen = [row["id"].lower() for row in rows]
    problems: list[str] = []
    missing = expected_ids - set(seen)
    if missing:
        problems.append(f"{len(missing)} machine(s) missing from the report, e.g. {sorted(missing)[:3]}")
    if len(seen) != len(set(seen)):
        problems.append(f"{len(seen) - len(set(seen))} duplicate report row(s)")
    unfinished = [row for row in rows if row["state"] not in final_states]
    if unfinished:
        examples = [(row["name"], row["state"], row["reason"]) for row in unfinished[:3]]
        problems.append(f"{len(unfinished)} machine(s) without a final state, e.g. {examples}")
    if report["summary"]["machines"] != len(expected_ids):
        problems.append(f"summary counts {report['summary']['machines']} machines, the fleet has {len(expected_ids)}")
    return problems


def run_one(
    machines: int, subscriptions: int, seed: int, faults: str, timeout_real_s: float, report_dir: Path | None = None,
) -> dict[str, Any]:
    """One rollout in this process; the result row (without the parent's peak RSS)."""
    sys.path.insert(0, str(REPO_ROOT))
    from arc_hotpatch.runner import run_simulation
    from arc_hotpatch.twin.fleet import generate_fleet
    from core.policy import Policy

    fleet = generate_fleet(machines=machines, subscriptions=subscriptions, seed=seed)
    policy = replace(Policy(), reboot_policy="auto")
    import function_app  # noqa: F401  (imported here so the baseline RSS includes the app and the SDK)

    rss_before_kb = proc_status_kb("VmRSS")
    report = run_simulation(fleet, policy, faults=faults, timeout_real_s=timeout_real_s)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        faults_label = Path(faults).stem if faults not in ("none", "chaos") else faults
        report_path = report_dir / f"report-{machines}-s{subscriptions}-seed{seed}-{faults_label}.json"
        report_path.write_text(json.dumps(report, indent=1) + "\n")
    metrics = report["metrics"]
    by_orchestrator: dict[str, dict[str, int]] = metrics["history_by_orchestrator"]
    fleet_level = [by_orchestrator[name] for name in FLEET_ORCHESTRATORS if name in by_orchestrator]
    machine_level = by_orchestrator.get(MACHINE_ORCHESTRATOR, {})
    expected_ids = {machine_resource_id(fleet, spec) for spec in fleet.machines}
    problems = final_state_problems(report, expected_ids)
    wall_s = metrics["wall_s"]
    injected = metrics.get("injected_faults", {})
    return {
        "machines": machines,
        "subscriptions": subscriptions,
        "seed": seed,
        "faults": faults,
        "ok": not problems,
        "problems": problems,
        "wall_s": wall_s,
        "virtual_makespan_s": metrics["virtual_makespan_s"],
        "machines_per_s": round(machines / wall_s, 1) if wall_s else None,
        "arm_requests": metrics["arm_requests"],
        "arm_requests_per_machine": round(metrics["arm_requests"] / machines, 1),
        "throttled_responses": metrics["throttled_responses"],
        "injected_429": injected.get("429", 0),
        "injected_faults": injected,
        "orchestrations": metrics["orchestrations"],
        "episodes": metrics["episodes"],
        "history_events_replayed": metrics["history_events_replayed"],
        "activity_calls": metrics["activity_calls"],
        "max_history_events": metrics["max_history_events"],
        "max_history_fleet_level": max((entry["max_history_events"] for entry in fleet_level), default=0),
        "max_history_machine": machine_level.get("max_history_events", 0),
        "history_by_orchestrator": by_orchestrator,
        "by_state": report["summary"]["by_state"],
        "rss_before_run_mb": round(rss_before_kb / 1024, 1),
        "peak_rss_self_mb": round(proc_status_kb("VmHWM") / 1024, 1),
    }


def machine_resource_id(fleet: Fleet, spec: MachineSpec) -> str:
    """The ARM id the report uses for a twin machine (matched case-insensitively below)."""
    subscription_id = fleet.subscription_ids[spec.subscription]
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{spec.resource_group}"
        f"/providers/Microsoft.HybridCompute/machines/{spec.name}"
    ).lower()


def child_main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger().setLevel(logging.ERROR)  # the app and the SDK log per request at INFO
    try:
        report_dir = Path(args.report_dir) if args.report_dir else None
        row = run_one(args.machines, args.subscriptions, args.seed, args.faults, args.timeout, report_dir)
    except Exception as exc:  # a failed rollout is a result to report, not a crash of the benchmark
        row = {
            "machines": args.machines, "subscriptions": args.subscriptions, "seed": args.seed,
            "faults": args.faults, "ok": False, "problems": [f"{type(exc).__name__}: {exc}"],
        }
    print(json.dumps(row), flush=True)


# ---------------------------------------------------------------------------------- parent


def run_child(machines: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one size in a fresh interpreter; adds the child's peak RSS (``os.wait4``) and exit status."""
    faults = args.faults
    if faults not in ("none", "chaos"):
        faults = str(Path(faults).resolve())  # the child runs from the repository root
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child",
        "--machines", str(machines), "--subscriptions", str(args.subscriptions), "--seed", str(args.seed),
        "--faults", faults, "--timeout", str(args.timeout),
    ]
    if args.report_dir:
        command += ["--report-dir", str(Path(args.report_dir).resolve())]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    output = process.stdout.read()
    process.stdout.close()
    _, wait_status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(wait_status)
    lines = [line for line in output.splitlines() if line.startswith("{")]
    row: dict[str, Any] = json.loads(lines[-1]) if lines else {
        "machines": machines, "ok": False, "problems": [f"no result line (exit status {process.returncode})"],
    }
    row["exit_status"] = process.returncode
    row["process_s"] = round(time.perf_counter() - started, 1)
    row["peak_rss_mb"] = round(usage.ru_maxrss / 1024, 1)  # Linux: kilobytes
    row["cpu_s"] = round(usage.ru_utime + usage.ru_stime, 1)
    return row


TABLE_COLUMNS: list[tuple[str, str]] = [
    ("machines", "machines"),
    ("faults", "faults"),
    ("ok", "all final"),
    ("wall_s", "wall s"),
    ("machines_per_s", "machines/s"),
    ("virtual_makespan_s", "virtual makespan"),
    ("arm_requests", "ARM requests"),
    ("arm_requests_per_machine", "ARM req/machine"),
    ("throttled_responses", "429s (injected)"),
    ("orchestrations", "orchestrations"),
    ("episodes", "episodes"),
    ("history_events_replayed", "events replayed"),
    ("max_history_events", "largest history (any)"),
    ("max_history_fleet_level", "largest history (fleet-level)"),
    ("peak_rss_mb", "peak RSS MB"),
]


def cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key == "ok":
        return "yes" if value else "**NO**"
    if key == "virtual_makespan_s":
        return f"{value / 3600:.1f} h"
    if key == "throttled_responses":
        return f"{value:,} ({row.get('injected_429', 0):,})"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return str(value)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| " + " | ".join(title for _, title in TABLE_COLUMNS) + " |",
        "|" + "---|" * len(TABLE_COLUMNS),
    ]
    lines += ["| " + " | ".join(cell(row, key) for key, _ in TABLE_COLUMNS) + " |" for row in rows]
    return "\n".join(lines)


def parent_main(args: argparse.Namespace) -> int:
    sizes = [int(size) for size in args.sizes.split(",") if size.strip()]
    rows: list[dict[str, Any]] = []
    json_out = Path(args.json_out) if args.json_out else None
    for machines in sizes:
        print(f"# {machines} machines, {args.subscriptions} subscription(s), seed {args.seed}, faults {args.faults}",
              file=sys.stderr, flush=True)
        row = run_child(machines, args)
        rows.append(row)
        line = json.dumps(row)
        print(line, flush=True)
        if json_out is not None:
            with json_out.open("a") as sink:
                sink.write(line + "\n")
        for problem in row.get("problems", []):
            print(f"# PROBLEM at {machines} machines (seed {args.seed}): {problem}", file=sys.stderr, flush=True)
    print()
    print(markdown_table(rows))
    return 0 if all(row.get("ok") and row.get("exit_status") == 0 for row in rows) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"fleet sizes (default {DEFAULT_SIZES})")
    parser.add_argument("--subscriptions", type=int, default=4, help="subscriptions of the fleet (default 4)")
    parser.add_argument("--seed", type=int, default=1, help="fleet and fault seed (default 1)")
    parser.add_argument("--faults", default="none", help="none | chaos | FILE (default none)")
    parser.add_argument("--timeout", type=float, default=7200.0, help="real-time budget per run in s (default 7200)")
    parser.add_argument("--json-out", help="also append each run's JSON line to this file")
    parser.add_argument("--report-dir", help="write each run's full rollout report (SPEC §5 JSON) here")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--machines", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    sys.exit(parent_main(args))


if __name__ == "__main__":
    main()
