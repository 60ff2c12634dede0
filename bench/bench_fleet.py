"""Benchmark of the product's headline job: whole simulated rollouts, measured against their lower bound.

Every configuration (fleet size x subscriptions x fleet mix) makes two simulated rollouts of the same
generated fleet with ``run_simulation`` (the real app on the local durable host, the real SDK clients
over HTTP to the twin, the virtual clock), each in a fresh interpreter (so each pass's CPU time and peak
RSS are its own; the table shows the rollout's):

1. **the rollout** measured: the ``simulate`` policy (the default policy, reboot policy ``auto``)
   with ``--concurrency`` and ``--waves``;
2. **the critical paths**: the same fleet and policy with the twin's ARM throttling off. Activities take
   no virtual time (none sleeps without a 429), so once started a machine waits for nothing but
   its own work: each machine's report row (``finished_at - started_at``) is its critical path
   (its own scripts, reboot, enablement and the app's own poll granularity), whatever else is in
   flight. This pass's requests per subscription and category are the requests the fleet needs
   (no retries). It runs at the rollout's concurrency: at concurrency = the fleet size the paths
   are the same (measured: 1,000 machines, every path to the second), but every machine would be
   in memory at once.

The lower bound of the rollout is the larger of: the sum over waves of each wave's longest
critical path; per subscription, the sum of its critical paths over ``concurrency``; per
subscription and ARM category, the requests the fleet needs beyond the bucket's burst over its
refill rate (reads 250 + 25/s, writes 200 + 10/s, deletes 200 + 10/s). The naive baseline is one
machine after another, each waited out: the sum of all critical paths.

That bound lets a slot split its time across machines; a machine holds its slot from start to finish.
The **slot bound** (``slot_bound``, shown beside it, not a target) is one no schedule beats, even one
that knows every path in advance: per subscription, of its ``k x concurrency + 1`` longest paths some
slot runs ``k + 1`` (pigeonhole), so the makespan is at least the sum of the ``k + 1`` shortest of them.
A subscription of 538 machines at concurrency 500 needs two paths end to end in some slot.

Wall time on a shared machine drifts (the same pass: 55 to 68 s within an hour, 40 % between days), so
``--repeat N`` runs the rollout pass N times and the row is the run of median wall time (every run's
wall time is listed; the runs must end alike). Beside the CPU time of the whole pass, the row has the
cores it kept busy (CPU / wall) and the CPU seconds of each process: the host (the pass's interpreter:
the durable host's driver, activity threads and HTTP API), the orchestrator worker, the twin, Azurite
(the kit names its children, ``arc_hotpatch.procname``; a child's time is its last reading, a quarter
second apart).

    .venv/bin/python bench/bench_fleet.py                          # the full matrix (about 3.5 h)
    .venv/bin/python bench/bench_fleet.py --sizes 1000 --subscriptions 1 --fleets mixed --repeat 3
    .venv/bin/python bench/bench_fleet.py --results bench/results.md   # also write the markdown results

Exit status 1 if a run fails, leaves a machine without a final state, or misses a target of
issue 11 (makespan <= 1.25 x bound, <= 12 ARM requests per machine on the mixed fleet, <= 1 %
429s, peak RSS < 1 GiB, 10,000 machines in <= 4 min of wall time, largest history within 20 % of
the smallest fleet's with the same subscriptions and mix).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MACHINE_ORCHESTRATOR = "machine_orchestrator"
ARM_BUDGET = {"reads": (250.0, 25.0), "writes": (200.0, 10.0), "deletes": (200.0, 10.0)}  # burst, refill per s
TARGET_RATIO = 1.25
TARGET_REQUESTS_PER_MACHINE = 12.0
TARGET_THROTTLED_SHARE = 0.01
TARGET_PEAK_RSS_MB = 1024.0
TARGET_WALL_MACHINES, TARGET_WALL_S = 10_000, 240.0  # 10,000 machines simulated in 4 minutes of wall time
TARGET_HISTORY_GROWTH = 0.20  # largest history per instance flat (within 20 %) from 1,000 to 10,000 machines


def _on_path() -> None:
    """The app (the repository) and the kit (``arc_hotpatch``) importable, once."""
    for folder in (str(REPO_ROOT / "kit"), str(REPO_ROOT)):
        if folder not in sys.path:
            sys.path.insert(0, folder)


# ---------------------------------------------------------------------------------- the bound


def _utc(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def critical_paths(report: dict[str, Any]) -> dict[str, float]:
    """Seconds from start to finish of every machine that ran (rows without times never started)."""
    return {
        row["id"].lower(): (_utc(row["finished_at"]) - _utc(row["started_at"])).total_seconds()
        for row in report["machines"]
        if row.get("started_at") and row.get("finished_at")
    }


def slot_bound(paths: list[float], concurrency: int) -> float:
    """The shortest makespan of these paths on ``concurrency`` slots, each path run whole in one slot, is at
    least this (see the module docstring): the longest path, the sum over the slots, and the pigeonhole sums."""
    ordered = sorted(paths, reverse=True)
    best = max(ordered[0] if ordered else 0.0, sum(ordered) / concurrency)
    rounds = 1
    while rounds * concurrency < len(ordered):
        longest = ordered[: rounds * concurrency + 1]
        best = max(best, sum(longest[-(rounds + 1):]))
        rounds += 1
    return best


def lower_bound(
    paths_report: dict[str, Any], concurrency: int, waves_text: str
) -> dict[str, float]:
    """The three bounds of the rollout (seconds) from the critical-paths pass, and the naive baseline."""
    from core.policy import parse_waves
    from core.rollout import wave_count, wave_end

    paths = critical_paths(paths_report)
    rows = sorted(paths_report["machines"], key=lambda row: (row["subscription_id"].lower(), row["name"]))
    members = [paths[row["id"].lower()] for row in rows if row["actions"] and row["id"].lower() in paths]
    settled = [paths[row["id"].lower()] for row in rows if not row["actions"] and row["id"].lower() in paths]
    waves = parse_waves(waves_text)
    by_wave, start = 0.0, 0
    for index in range(wave_count(waves)):
        end = wave_end(waves, index, len(members))
        if end > start:
            by_wave += max(members[start:end])
        start = max(start, end)
    by_wave = max(by_wave, max(settled, default=0.0))
    per_subscription: dict[str, list[float]] = {}
    for row in rows:
        if row["id"].lower() in paths:
            per_subscription.setdefault(row["subscription_id"].lower(), []).append(paths[row["id"].lower()])
    by_concurrency = max((sum(p) for p in per_subscription.values()), default=0.0) / concurrency
    by_slots = max((slot_bound(p, concurrency) for p in per_subscription.values()), default=0.0)
    by_arm = 0.0
    for counts in paths_report["metrics"]["arm_requests_by_subscription"].values():
        for category, (burst, rate) in ARM_BUDGET.items():
            by_arm = max(by_arm, (counts.get(category, 0) - burst) / rate)
    return {
        "bound_waves_s": round(by_wave, 1),
        "bound_concurrency_s": round(by_concurrency, 1),
        "bound_arm_s": round(by_arm, 1),
        "bound_s": round(max(by_wave, by_concurrency, by_arm), 1),
        "bound_slots_s": round(max(by_wave, by_slots, by_arm), 1),
        "naive_s": round(sum(paths.values()), 1),
        "longest_path_s": round(max(paths.values(), default=0.0), 1),
        "mean_path_s": round(sum(paths.values()) / len(paths), 1) if paths else 0.0,
    }


# ---------------------------------------------------------------------------------- child


def proc_status_kb(field: str, pid: int | str = "self") -> int:
    """A ``/proc/<pid>/status`` field in kB (VmHWM: peak RSS, VmRSS: RSS now); 0 where it cannot be read."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _process_tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the orchestrator worker, the twin, Azurite), from /proc."""
    tree, index = [pid], 0
    while index < len(tree):
        for task in Path(f"/proc/{tree[index]}/task").glob("*/children"):
            with contextlib.suppress(OSError):
                tree += [int(child) for child in task.read_text().split()]
        index += 1
    return tree


CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
HOST = "host"  # the pass's own interpreter: the durable host's driver, its activity threads, the HTTP API
PROCESS_ROLES = (HOST, "orchestrator worker", "twin", "Azurite", "other")


def proc_cpu_s(pid: int | str = "self") -> float:
    """User + system CPU seconds of a process from ``/proc/<pid>/stat`` (0.0 where it cannot be read)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS_PER_S  # utime, stime (fields 14 and 15)


def process_role(pid: int, root: int) -> str:
    """Which part of the simulation ``pid`` is: the kit names its children (``arc_hotpatch.procname``)."""
    _on_path()
    from arc_hotpatch.procname import ORCHESTRATOR_WORKER_PROCESS, TWIN_PROCESS

    if pid == root:
        return HOST
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "other"
    if comm == TWIN_PROCESS:
        return "twin"
    if comm == ORCHESTRATOR_WORKER_PROCESS:
        return "orchestrator worker"
    return "Azurite" if "azurite" in command else "other"


class TreeSampler:
    """Every ``interval_s``: the summed RSS of this process and every descendant (its peak), and each
    descendant's CPU time so far (the last reading of a process that exits counts: within one interval)."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.peak_kb = 0
        self._cpu_s: dict[int, tuple[str, float]] = {}  # pid -> (role, CPU seconds at its last reading)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def _run(self, interval_s: float) -> None:
        root = os.getpid()
        while not self._stop.wait(interval_s):
            tree = _process_tree(root)
            self.peak_kb = max(self.peak_kb, sum(proc_status_kb("VmRSS", pid) for pid in tree))
            for pid in tree[1:]:
                known_role, seconds = self._cpu_s.get(pid, ("other", 0.0))
                # A child names itself once it has started (until then it is "python"): look until it has.
                role = known_role if known_role != "other" else process_role(pid, root)
                self._cpu_s[pid] = (role, max(proc_cpu_s(pid), seconds))

    def cpu_s_by_role(self) -> dict[str, float]:
        """CPU seconds per role: this process's own (exact), its descendants' (as last sampled)."""
        totals = dict.fromkeys(PROCESS_ROLES, 0.0)
        totals[HOST] = proc_cpu_s()
        for role, seconds in self._cpu_s.values():
            totals[role] += seconds
        rounded = {role: round(seconds, 1) for role, seconds in totals.items()}
        return {role: seconds for role, seconds in rounded.items() if seconds or role == HOST}

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()


def final_state_problems(report: dict[str, Any], machines: int) -> list[str]:
    from core.vocabulary import FinalState

    final_states = {state.value for state in FinalState}
    rows = report["machines"]
    problems: list[str] = []
    if len({row["id"].lower() for row in rows}) != machines or len(rows) != machines:
        problems.append(f"the report has {len(rows)} rows for {machines} machines")
    unfinished = [(row["name"], row["state"]) for row in rows if row["state"] not in final_states]
    if unfinished:
        problems.append(f"{len(unfinished)} machine(s) without a final state, e.g. {unfinished[:3]}")
    return problems


def outcomes(report: dict[str, Any]) -> dict[str, tuple[str, str, tuple[str, ...], int]]:
    return {row["id"].lower(): (row["state"], row["reason"], tuple(row["actions"]), row["reboots"])
            for row in report["machines"]}


def run_pass(machines: int, subscriptions: int, mix: str, seed: int, concurrency: int, waves: str,
             timeout_real_s: float, throttling: bool) -> dict[str, Any]:
    """One pass (the rollout, or the critical paths with throttling off) in this process; its report."""
    _on_path()
    import function_app  # noqa: F401  (imported before the run: the app and the SDK are in every RSS)
    from arc_hotpatch.cli import SIMULATE_BASE
    from arc_hotpatch.runner import run_simulation
    from arc_hotpatch.twin.fleet import generate_fleet
    from core.policy import parse_waves

    fleet = generate_fleet(machines=machines, subscriptions=subscriptions, seed=seed, mix=mix)
    policy = replace(SIMULATE_BASE, concurrency=concurrency, waves=parse_waves(waves))
    return run_simulation(fleet, policy, throttling=throttling, timeout_real_s=timeout_real_s)


def result_row(report: dict[str, Any], paths_report: dict[str, Any], machines: int, subscriptions: int, mix: str,
               args: argparse.Namespace) -> dict[str, Any]:
    """One configuration's result row from its two passes' reports."""
    bound = lower_bound(paths_report, args.concurrency, args.waves)
    problems = final_state_problems(report, machines)
    if outcomes(report) != outcomes(paths_report):
        differing = [key for key, value in outcomes(report).items() if outcomes(paths_report).get(key) != value]
        problems.append(f"{len(differing)} machine(s) ended differently without contention, e.g. {differing[:2]}")
    metrics = report["metrics"]
    requests = metrics["arm_requests"]
    by_orchestrator = metrics["history_by_orchestrator"]
    machine_level = by_orchestrator.get(MACHINE_ORCHESTRATOR, {})
    makespan = metrics["virtual_makespan_s"]
    return {
        "machines": machines, "subscriptions": subscriptions, "fleet": mix, "seed": args.seed,
        "concurrency": args.concurrency, "waves": args.waves, "problems": problems,
        "wall_s": metrics["wall_s"], "virtual_makespan_s": makespan, **bound,
        "ratio": round(makespan / bound["bound_s"], 3) if bound["bound_s"] else None,
        "ratio_slots": round(makespan / bound["bound_slots_s"], 3) if bound["bound_slots_s"] else None,
        "arm_requests": requests,
        "arm_requests_per_machine": round(requests / machines, 2),
        "arm_requests_per_machine_by_operation": {
            op: round(count / machines, 2) for op, count in metrics["arm_requests_by_operation"].items()
        },
        "throttled_responses": metrics["throttled_responses"],
        "throttled_share": round(metrics["throttled_responses"] / requests, 5) if requests else 0.0,
        "episodes_per_machine": round(metrics["episodes"] / machines, 2),
        "history_events_per_machine": round(metrics["history_events_replayed"] / machines, 1),
        "max_history_events": metrics["max_history_events"],
        "max_history_by_orchestrator": {name: entry["max_history_events"] for name, entry in by_orchestrator.items()},
        "machine_histories_per_machine": round(machine_level.get("episodes", 0) / machines, 2),
        "by_state": report["summary"]["by_state"],
    }


def child_main(args: argparse.Namespace) -> None:
    """One pass; its report and peak RSS as JSON in ``--out``."""
    logging.basicConfig(level=logging.ERROR)  # the app and the SDK log per request at INFO
    with TreeSampler() as sampler:
        report = run_pass(args.machines, int(args.subscriptions), args.fleets, args.seed, args.concurrency,
                          args.waves, args.timeout, throttling=args.pass_name == "rollout")
    # Peak RSS of the whole simulation: this process, the orchestrator worker, the twin's process and Azurite,
    # summed (at least this process's own peak plus its largest finished child's).
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = max(sampler.peak_kb, proc_status_kb("VmHWM") + children.ru_maxrss)
    Path(args.out).write_text(json.dumps({"report": report, "peak_rss_mb": round(peak_kb / 1024, 1),
                                          "cpu_s_by_process": sampler.cpu_s_by_role()}))


# ---------------------------------------------------------------------------------- parent


def run_child(machines: int, subscriptions: int, mix: str, pass_name: str, args: argparse.Namespace,
              out: Path) -> dict[str, Any]:
    """One pass in a fresh interpreter (its peak RSS is its own); its output, and its CPU time (with its
    workers') from ``os.wait4``."""
    command = [
        sys.executable, str(Path(__file__).resolve()), "--child", pass_name, "--out", str(out),
        "--machines", str(machines), "--subscriptions", str(subscriptions), "--fleets", mix,
        "--seed", str(args.seed), "--concurrency", str(args.concurrency), "--waves", args.waves,
        "--timeout", str(args.timeout),
    ]
    process = subprocess.Popen(command, cwd=REPO_ROOT)
    _, wait_status, usage = os.wait4(process.pid, 0)
    exit_status = os.waitstatus_to_exitcode(wait_status)
    if exit_status != 0 or not out.is_file():
        raise RuntimeError(f"the {pass_name} pass exited with status {exit_status}")
    result: dict[str, Any] = json.loads(out.read_text())
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def run_config(machines: int, subscriptions: int, mix: str, args: argparse.Namespace) -> dict[str, Any]:
    """Both passes of one configuration, each in its own interpreter (the rollout ``--repeat`` times); the row."""
    started = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory(prefix="bench-fleet-") as folder:
            rollouts = [run_child(machines, subscriptions, mix, "rollout", args, Path(folder) / f"rollout-{n}.json")
                        for n in range(args.repeat)]
            paths = run_child(machines, subscriptions, mix, "paths", args, Path(folder) / "paths.json")
        # The runs make the same decisions (virtual time); wall and CPU time vary with the machine's load: the
        # row is the run of median wall time, with every run's wall time beside it.
        rollout = sorted(rollouts, key=lambda run: run["report"]["metrics"]["wall_s"])[len(rollouts) // 2]
        row = result_row(rollout["report"], paths["report"], machines, subscriptions, mix, args)
        wall_s = row["wall_s"]
        row.update(peak_rss_mb=max(run["peak_rss_mb"] for run in rollouts), peak_rss_mb_paths_pass=paths["peak_rss_mb"],
                   cpu_s_rollout=round(rollout["cpu_s"], 1), cpu_s_paths_pass=round(paths["cpu_s"], 1),
                   cpu_s_by_process=rollout["cpu_s_by_process"],
                   cores_used=round(rollout["cpu_s"] / wall_s, 2) if wall_s else None,
                   wall_s_runs=sorted(run["report"]["metrics"]["wall_s"] for run in rollouts))
        for run in rollouts:
            if outcomes(run["report"]) != outcomes(rollout["report"]):
                row["problems"].append("the repeated rollouts ended differently")
                break
    except Exception as exc:  # a failed run is a result to report, not a crash of the benchmark
        row = {"machines": machines, "subscriptions": subscriptions, "fleet": mix,
               "problems": [f"{type(exc).__name__}: {exc}"]}
    row["process_s"] = round(time.perf_counter() - started, 1)  # every pass
    row["misses"] = target_misses(row)
    return row


def target_misses(row: dict[str, Any]) -> list[str]:
    misses: list[str] = []
    if row.get("ratio") is not None and row["ratio"] > TARGET_RATIO:
        misses.append(f"makespan {row['ratio']} x its bound (target <= {TARGET_RATIO})")
    if row.get("fleet") == "mixed" and row.get("arm_requests_per_machine", 0) > TARGET_REQUESTS_PER_MACHINE:
        misses.append(f"{row['arm_requests_per_machine']} ARM requests per machine (target <= 12)")
    if row.get("subscriptions") == 1 and row.get("throttled_share", 0) > TARGET_THROTTLED_SHARE:
        misses.append(f"{row['throttled_share']:.2%} of requests throttled (target <= 1 %)")
    if row.get("peak_rss_mb", 0) >= TARGET_PEAK_RSS_MB:
        misses.append(f"peak RSS {row['peak_rss_mb']} MB (target < 1 GiB)")
    if row.get("machines", 0) >= TARGET_WALL_MACHINES and row.get("wall_s", 0) > TARGET_WALL_S:
        misses.append(f"{row['machines']:,} machines in {row['wall_s']:,.0f} s of wall time (target <= "
                      f"{TARGET_WALL_S:.0f} s)")
    return misses


def history_misses(rows: list[dict[str, Any]]) -> dict[int, list[str]]:
    """Largest history flat from the smallest fleet to the larger ones (within ``TARGET_HISTORY_GROWTH``), per
    subscription count and fleet mix: the misses by row index (a row that grew too much)."""
    smallest: dict[tuple[Any, Any], dict[str, Any]] = {}
    for row in rows:
        key = (row.get("subscriptions"), row.get("fleet"))
        if "max_history_events" in row and (key not in smallest or row["machines"] < smallest[key]["machines"]):
            smallest[key] = row
    misses: dict[int, list[str]] = {}
    for index, row in enumerate(rows):
        base = smallest.get((row.get("subscriptions"), row.get("fleet")))
        if base is None or "max_history_events" not in row or row is base:
            continue
        if row["max_history_events"] > base["max_history_events"] * (1 + TARGET_HISTORY_GROWTH):
            misses[index] = [f"largest history {row['max_history_events']} events, more than "
                             f"{TARGET_HISTORY_GROWTH:.0%} over {base['max_history_events']} at {base['machines']:,} "
                             "machines (target: flat)"]
    return misses


def _hours(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds / 3600:.2f} h"


TABLE: list[tuple[str, str]] = [
    ("machines", "machines"), ("subscriptions", "subs"), ("fleet", "fleet"),
    ("wall_s", "wall s"), ("cpu_s_rollout", "CPU s"), ("cores_used", "cores used"),
    ("peak_rss_mb", "peak RSS MB (all processes)"),
    ("virtual_makespan_s", "makespan"), ("bound_s", "bound"), ("ratio", "makespan / bound"),
    ("bound_slots_s", "slot bound"), ("ratio_slots", "makespan / slot bound"),
    ("naive_s", "naive"), ("arm_requests_per_machine", "ARM req/machine"), ("throttled_share", "429 share"),
    ("episodes_per_machine", "episodes/machine"), ("history_events_per_machine", "events/machine"),
    ("max_history_events", "largest history"),
]


def cell(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    if key in ("virtual_makespan_s", "bound_s", "bound_slots_s", "naive_s"):
        return _hours(value)
    if key == "throttled_share":
        return f"{value:.2%}"
    if isinstance(value, float):
        return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def markdown(rows: list[dict[str, Any]], command: str) -> str:
    lines = [
        "# Fleet rollout benchmark (`bench/bench_fleet.py`)",
        "",
        f"`{command}` on {platform.machine()} with {os.cpu_count()} CPUs, Python {platform.python_version()},"
        f" {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. What each column means: the script's docstring.",
        "",
        "| " + " | ".join(title for _, title in TABLE) + " |",
        "|" + "---|" * len(TABLE),
    ]
    lines += ["| " + " | ".join(cell(row, key) for key, _ in TABLE) + " |" for row in rows]
    lines += ["", "## Bounds, requests by operation (per machine), largest history by orchestrator", ""]
    for row in rows:
        label = f"{row['machines']:,} machines, {row['subscriptions']} sub(s), {row['fleet']}"
        if row.get("problems") or row.get("misses"):
            lines.append(f"- **{label}: {'; '.join(row.get('problems', []) + row.get('misses', []))}**")
        if "bound_s" not in row:
            continue
        lines.append(
            f"- {label}: bound = max(waves {_hours(row['bound_waves_s'])}, concurrency"
            f" {_hours(row['bound_concurrency_s'])}, ARM {_hours(row['bound_arm_s'])}), slot bound"
            f" {_hours(row['bound_slots_s'])}; longest path"
            f" {row['longest_path_s'] / 60:.1f} min, mean {row['mean_path_s'] / 60:.1f} min; requests "
            + ", ".join(f"{op} {n}" for op, n in sorted(row["arm_requests_per_machine_by_operation"].items()))
            + "; largest history " + ", ".join(f"{name} {n}" for name, n in row["max_history_by_orchestrator"].items())
            + ("; CPU s by process " + ", ".join(f"{role} {s}" for role, s in row["cpu_s_by_process"].items())
               if row.get("cpu_s_by_process") else "")
            + ("; wall s of the runs " + ", ".join(f"{s:,.1f}" for s in row["wall_s_runs"])
               if len(row.get("wall_s_runs", [])) > 1 else "")
        )
    return "\n".join(lines) + "\n"


def parent_main(args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for mix in args.fleets.split(","):
        for subscriptions in (int(s) for s in args.subscriptions.split(",")):
            for machines in (int(s) for s in args.sizes.split(",")):
                print(f"# {machines} machines, {subscriptions} subscription(s), {mix} fleet", file=sys.stderr,
                      flush=True)
                row = run_config(machines, subscriptions, mix, args)
                rows.append(row)
                print(json.dumps(row), flush=True)
                for problem in row.get("problems", []) + row["misses"]:
                    print(f"# PROBLEM: {problem}", file=sys.stderr, flush=True)
    for index, misses in history_misses(rows).items():
        rows[index]["misses"] += misses
        for miss in misses:
            print(f"# PROBLEM: {miss}", file=sys.stderr, flush=True)
    command = "bench/bench_fleet.py " + " ".join(sys.argv[1:])
    text = markdown(rows, command)
    print(text)
    if args.results:
        Path(args.results).write_text(text)
    return 0 if all(not row.get("problems") and not row["misses"] for row in rows) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,5000,10000", help="fleet sizes (default 1000,5000,10000)")
    parser.add_argument("--subscriptions", default="1,10", help="subscription counts (default 1,10)")
    parser.add_argument("--fleets", default="ready,mixed", help="fleet mixes: ready, mixed (default both)")
    parser.add_argument("--seed", type=int, default=2, help="fleet seed (default 2)")
    parser.add_argument("--concurrency", type=int, default=500, help="machines in flight per subscription (500)")
    parser.add_argument("--waves", default="100%", help="rollout waves (default 100%%)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="real seconds per pass (default 3600)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="rollout passes per configuration; the row shows the median wall time (default 1)")
    parser.add_argument("--results", help="write the markdown results here (e.g. bench/results.md)")
    parser.add_argument("--child", dest="pass_name", choices=("rollout", "paths"), help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--machines", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error(f"--repeat takes a whole number >= 1, got {args.repeat}")
    if args.pass_name:
        child_main(args)
        return
    sys.exit(parent_main(args))


if __name__ == "__main__":
    main()
