"""Benchmark of the local durable host: why a fleet-wide orchestration must be batched.

Every episode replays an orchestration's whole history through the SDK, so a fan-out of
N activities in one instance costs about N x N / batch replayed events in total, while
sub-orchestrations of B activities keep every history small.

    .venv/bin/python bench/bench_durable_host.py --activities 5000 --batch 100

Prints, for each variant: real time, episodes, history events replayed (total and the
largest history), activity calls, and the virtual time the run took.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any

import azure.durable_functions as df
import azure.functions as func

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)


@app.activity_trigger(input_name="value")
def work(value: int) -> int:
    return value * 2


@app.orchestration_trigger(context_name="context")
def fan_out(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    start, count = spec["start"], spec["count"]
    results = yield context.task_all([context.call_activity("work", start + i) for i in range(count)])
    return sum(results)


@app.orchestration_trigger(context_name="context")
def batched(context: df.DurableOrchestrationContext):
    spec = context.get_input()
    total, batch = spec["total"], spec["batch"]
    children = [
        context.call_sub_orchestrator("fan_out", {"start": start, "count": min(batch, total - start)})
        for start in range(0, total, batch)
    ]
    return sum((yield context.task_all(children)))


def run(name: str, orchestrator: str, payload: dict[str, Any], *, batch_size: int, workers: int) -> dict[str, Any]:
    clock = VirtualClock()
    started_at = clock.now()
    with DurableHost(app, clock, batch_size=batch_size, activity_workers=workers) as host:
        wall = time.perf_counter()
        instance_id = host.start_new(orchestrator, f"bench-{orchestrator}", payload)
        status = host.run_until_complete([instance_id], timeout_real_s=3600)[instance_id]
        elapsed = time.perf_counter() - wall
        metrics = host.metrics()
    return {
        "variant": name,
        "status": status["runtimeStatus"],
        "output": status["output"],
        "real_s": round(elapsed, 2),
        "orchestrations": metrics["orchestrations"],
        "episodes": metrics["episodes"],
        "replayed_events": metrics["history_events_replayed"],
        "max_history": metrics["max_history_events"],
        "activity_calls": metrics["activity_calls_total"],
        "virtual_s": (clock.now() - started_at).total_seconds(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--activities", type=int, default=5000, help="activities to fan out (default 5000)")
    parser.add_argument("--batch", type=int, default=100, help="activities per sub-orchestration (default 100)")
    parser.add_argument("--batch-size", type=int, default=32, help="messages per episode (Azure Storage: 32)")
    parser.add_argument("--workers", type=int, default=8, help="activity worker threads (default 8)")
    parser.add_argument("--skip-single", action="store_true", help="only run the batched variant")
    args = parser.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # azure.functions warns that an app without HTTP has no auth

    expected = sum(2 * i for i in range(args.activities))
    rows = []
    if not args.skip_single:
        rows.append(
            run(
                f"one orchestration, {args.activities} activities",
                "fan_out",
                {"start": 0, "count": args.activities},
                batch_size=args.batch_size,
                workers=args.workers,
            )
        )
    rows.append(
        run(
            f"sub-orchestrations of {args.batch}",
            "batched",
            {"total": args.activities, "batch": args.batch},
            batch_size=args.batch_size,
            workers=args.workers,
        )
    )
    columns = ["variant", "status", "real_s", "orchestrations", "episodes", "replayed_events", "max_history"]
    columns += ["activity_calls"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in columns}
    print("  ".join(c.ljust(widths[c]) for c in columns))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in columns))
        if row["output"] != expected:
            raise SystemExit(f"{row['variant']}: wrong result {row['output']!r}, expected {expected}")


if __name__ == "__main__":
    main()
