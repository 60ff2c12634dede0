"""Chaos vs fault-free: the same fleet and seed must end the same whatever faults the twin injects.

Two simulated rollouts (``run_simulation``: the real app on the local durable host, the real SDK
clients over HTTP to the twin, the virtual clock) of one generated fleet
(``generate_fleet(machines, subscriptions, seed)``, the ``mixed`` fleet), each in a fresh child
process, one after the other, with the ``simulate`` policy (the default policy, reboot policy
``auto``) and ``--concurrency`` / ``--waves``:

1. **fault-free**: ``faults=None``;
2. **chaos**: ``faults="chaos"`` (injected 429s and 5xx with Retry-After, lost Run Command
   results, slow reboots, agent flaps; every decision a hash of the fleet's seed, so reproducible).

Every machine (by lower-cased resource id) must end with the same (state, reason, actions,
reboots) in both: the faults may cost time and requests, never a different outcome.

    .venv/bin/python bench/bench_faults.py                                   # 1,000 machines, 5 subscriptions
    .venv/bin/python bench/bench_faults.py --machines 60 --subscriptions 2   # a quick check
    .venv/bin/python bench/bench_faults.py --results bench/results-faults.md # also write the markdown

Exit status 1 if a pass fails, the two reports do not cover the same machines, or any machine differs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PASSES = ("fault-free", "chaos")
MAX_DIFFERENCES_SHOWN = 20


# ---------------------------------------------------------------------------------- child


def run_pass(args: argparse.Namespace) -> dict[str, Any]:
    """One rollout in this process; its outcome per machine and the figures the comparison reports."""
    sys.path[:0] = [str(REPO_ROOT), str(REPO_ROOT / "kit")]
    from arc_hotpatch.cli import SIMULATE_BASE
    from arc_hotpatch.runner import run_simulation
    from arc_hotpatch.twin.fleet import generate_fleet
    from core.policy import parse_waves

    fleet = generate_fleet(machines=args.machines, subscriptions=args.subscriptions, seed=args.seed)
    policy = replace(SIMULATE_BASE, concurrency=args.concurrency, waves=parse_waves(args.waves))
    faults = "chaos" if args.child == "chaos" else None
    report = run_simulation(fleet, policy, faults=faults, timeout_real_s=args.timeout)
    metrics = report["metrics"]
    return {
        "pass": args.child,
        "wall_s": metrics["wall_s"],
        "virtual_makespan_s": metrics["virtual_makespan_s"],
        "arm_requests": metrics["arm_requests"],
        "throttled_responses": metrics["throttled_responses"],
        "injected_faults": metrics.get("injected_faults", {}),
        "by_state": report["summary"]["by_state"],
        "machines": {
            row["id"].lower(): {
                "name": row["name"], "state": row["state"], "reason": row["reason"],
                "actions": list(row["actions"]), "reboots": row["reboots"], "detail": row.get("detail", ""),
            }
            for row in report["machines"]
        },
        "rows": len(report["machines"]),
    }


def child_main(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.ERROR)  # the app and the SDK log per request at INFO
    try:
        result = run_pass(args)
    except Exception as exc:  # a failed pass is a result to report, not a crash of the benchmark
        result = {"pass": args.child, "problem": f"{type(exc).__name__}: {exc}"}
    print(json.dumps(result), flush=True)


# ---------------------------------------------------------------------------------- parent


def run_child(name: str, args: argparse.Namespace) -> dict[str, Any]:
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", name, "--machines", str(args.machines),
        "--subscriptions", str(args.subscriptions), "--seed", str(args.seed),
        "--concurrency", str(args.concurrency), "--waves", args.waves, "--timeout", str(args.timeout),
    ]
    started = time.perf_counter()
    process = subprocess.run(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {
        "pass": name, "problem": f"no result line (exit status {process.returncode})",
    }
    result["exit_status"] = process.returncode
    result["process_s"] = round(time.perf_counter() - started, 1)
    return result


def outcome(entry: dict[str, Any] | None) -> tuple[Any, ...] | None:
    if entry is None:
        return None
    return (entry["state"], entry["reason"], tuple(entry["actions"]), entry["reboots"])


def differences(free: dict[str, Any], chaos: dict[str, Any]) -> list[str]:
    """The machine ids (sorted) whose outcome differs, or that only one report has."""
    ids = sorted(set(free["machines"]) | set(chaos["machines"]))
    return [key for key in ids if outcome(free["machines"].get(key)) != outcome(chaos["machines"].get(key))]


def problems(results: dict[str, dict[str, Any]], machines: int) -> list[str]:
    found: list[str] = []
    for name, result in results.items():
        if result.get("problem"):
            found.append(f"{name}: {result['problem']}")
        elif result["exit_status"] != 0:
            found.append(f"{name}: exit status {result['exit_status']}")
        elif result["rows"] != machines or len(result["machines"]) != machines:
            found.append(f"{name}: the report has {result['rows']} rows, {len(result['machines'])} distinct ids,"
                         f" for {machines} machines")
    return found


def _tuple_text(entry: dict[str, Any] | None) -> str:
    if entry is None:
        return "(missing)"
    actions = ", ".join(entry["actions"]) or "-"
    return f"{entry['state']} / {entry['reason']} / [{actions}] / {entry['reboots']}"


def _detail_text(entry: dict[str, Any] | None, limit: int = 160) -> str:
    text = "" if entry is None else (entry.get("detail") or "")
    text = " ".join(text.split()).replace("|", "\\|")
    return (text[: limit - 1] + "…") if len(text) > limit else (text or "-")


def _faults_text(injected: dict[str, int]) -> str:
    return ", ".join(f"{kind} {count:,}" for kind, count in sorted(injected.items())) or "none"


def markdown(args: argparse.Namespace, results: dict[str, dict[str, Any]], differing: list[str],
             found: list[str], command: str) -> str:
    lines = [
        "# Chaos vs fault-free (`bench/bench_faults.py`)",
        "",
        f"`{command}` on {platform.machine()} with {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Configuration: {args.machines:,} machines over {args.subscriptions} subscription(s), mixed fleet,"
        f" seed {args.seed}; policy `simulate` (reboot policy auto), concurrency {args.concurrency},"
        f" waves {args.waves}. Each pass in its own child process, one after the other.",
        "",
        "| pass | wall s | virtual makespan | ARM requests | throttled (429) responses | injected faults | by state |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in PASSES:
        result = results[name]
        if result.get("problem"):
            lines.append(f"| {name} | - | - | - | - | - | **{result['problem']}** |")
            continue
        by_state = ", ".join(f"{state} {count:,}" for state, count in result["by_state"].items())
        lines.append(
            f"| {name} | {result['wall_s']:,.1f} | {result['virtual_makespan_s'] / 3600:.2f} h"
            f" ({result['virtual_makespan_s']:,.0f} s) | {result['arm_requests']:,} |"
            f" {result['throttled_responses']:,} | {_faults_text(result['injected_faults'])} | {by_state} |"
        )
    lines.append("")
    for problem in found:
        lines.append(f"- **{problem}**")
    if found:
        lines.append("")
    compared = not any(results[name].get("problem") for name in PASSES)
    if compared:
        verdict = "**PASS**: every machine" if not differing else f"**FAIL**: {len(differing):,} machine(s) do not"
        lines.append(f"{verdict} end with the same (state, reason, actions, reboots) in both passes"
                     f" ({len(set(results['fault-free']['machines']) | set(results['chaos']['machines'])):,}"
                     " machines compared).")
    if differing:
        shown = differing[:MAX_DIFFERENCES_SHOWN]
        lines += [
            "",
            f"## Differing machines ({len(shown)} of {len(differing):,})",
            "",
            "| machine | fault-free (state / reason / [actions] / reboots) | chaos | fault-free detail"
            " | chaos detail |",
            "|---|---|---|---|---|",
        ]
        for key in shown:
            free, chaos = results["fault-free"]["machines"].get(key), results["chaos"]["machines"].get(key)
            name = (free or chaos or {}).get("name", key)
            lines.append(f"| {name} | {_tuple_text(free)} | {_tuple_text(chaos)} | {_detail_text(free)} |"
                         f" {_detail_text(chaos)} |")
    return "\n".join(lines) + "\n"


def parent_main(args: argparse.Namespace) -> int:
    results: dict[str, dict[str, Any]] = {}
    for name in PASSES:
        print(f"# {name}: {args.machines} machines, {args.subscriptions} subscription(s), seed {args.seed}",
              file=sys.stderr, flush=True)
        results[name] = run_child(name, args)
        summary = {key: value for key, value in results[name].items() if key != "machines"}
        print(json.dumps(summary), flush=True)
    found = problems(results, args.machines)
    compared = not any(result.get("problem") for result in results.values())
    differing = differences(results["fault-free"], results["chaos"]) if compared else []
    for problem in found:
        print(f"# PROBLEM: {problem}", file=sys.stderr, flush=True)
    command = "bench/bench_faults.py " + " ".join(sys.argv[1:])
    text = markdown(args, results, differing, found, command)
    print(text)
    if args.results:
        Path(args.results).write_text(text)
    return 0 if compared and not found and not differing else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=1000, help="fleet size (default 1000)")
    parser.add_argument("--subscriptions", type=int, default=5, help="subscriptions (default 5)")
    parser.add_argument("--seed", type=int, default=21, help="fleet seed, also the faults' seed (default 21)")
    parser.add_argument("--concurrency", type=int, default=500, help="machines in flight per subscription (500)")
    parser.add_argument("--waves", default="1,10%,100%", help="rollout waves (default 1,10%%,100%%: the default"
                        " policy's)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="real seconds per pass (default 3600)")
    parser.add_argument("--results", help="write the markdown results here (e.g. bench/results-faults.md)")
    parser.add_argument("--child", choices=PASSES, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return
    sys.exit(parent_main(args))


if __name__ == "__main__":
    main()
