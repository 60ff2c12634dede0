"""Throughput of the fleet twin: 10,000 machines, concurrent HTTP clients on loopback.

    .venv/bin/python bench/bench_twin.py [--machines 10000] [--seconds 10] [--processes 4] [--threads 8]

The twin runs in this process (its own event-loop thread, throttling off); the load comes
from separate worker processes (so the clients' GIL is not the twin's), each with a few
threads and a ``requests.Session``: machine GETs (half with ``$expand=instanceView``),
resource-group list pages of 100 machines, and Run Command PUTs followed by GETs.
Prints one JSON document: requests/s, latency percentiles per kind, errors, and the
twin process's CPU use (share of one core, milliseconds per request) and memory. The
twin is the bottleneck only if its CPU share approaches 1.0 (it serves from one thread).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import random
import resource
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

API = "api-version=2025-01-13"
AUTH = {"Authorization": "Bearer bench"}
READINESS = (ROOT / "activities" / "scripts" / "readiness.ps1").read_text(encoding="utf-8")
# kind -> share of requests
MIX = {"machine_get": 0.40, "machine_get_instance_view": 0.35, "list_page": 0.05, "run_put": 0.10, "run_get": 0.10}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _percentile(values: list[float], share: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def _worker(job: tuple[str, list[str], list[str], float, int, int]) -> dict[str, Any]:
    """One load process: ``threads`` clients for ``seconds``; returns latencies and errors per kind."""
    import threading

    import requests

    base_url, machines, groups, seconds, threads, seed = job
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    lock = threading.Lock()
    deadline = time.monotonic() + seconds
    kinds, weights = list(MIX), list(MIX.values())

    def client(index: int) -> None:
        rng = random.Random(seed * 1000 + index)
        session = requests.Session()
        mine: dict[str, list[float]] = defaultdict(list)
        failed: dict[str, int] = defaultdict(int)
        pending_runs: list[str] = []
        counter = 0
        while time.monotonic() < deadline:
            kind = rng.choices(kinds, weights)[0]
            if kind == "run_get" and not pending_runs:
                kind = "run_put"
            machine = rng.choice(machines)
            started = time.perf_counter()
            if kind == "machine_get":
                response = session.get(f"{base_url}{machine}?{API}", headers=AUTH, timeout=30)
            elif kind == "machine_get_instance_view":
                response = session.get(f"{base_url}{machine}?{API}&$expand=instanceView", headers=AUTH, timeout=30)
            elif kind == "list_page":
                url = f"{base_url}{rng.choice(groups)}/providers/Microsoft.HybridCompute/machines?{API}"
                response = session.get(url, headers=AUTH, timeout=30)
            elif kind == "run_put":
                counter += 1
                run = f"{machine}/runCommands/bench-{seed}-{index}-{counter}"
                body = {
                    "location": "eastus",
                    "properties": {
                        "source": {"script": READINESS},
                        "parameters": [{"name": "RequestId", "value": str(counter)}],
                    },
                }
                response = session.put(f"{base_url}{run}?{API}", json=body, headers=AUTH, timeout=30)
                pending_runs.append(run)
            else:
                response = session.get(f"{base_url}{pending_runs.pop()}?{API}", headers=AUTH, timeout=30)
            elapsed = time.perf_counter() - started
            if response.status_code >= 400:
                failed[kind] += 1
            mine[kind].append(elapsed)
        with lock:
            for kind, values in mine.items():
                latencies[kind].extend(values)
            for kind, count in failed.items():
                errors[kind] += count

    workers = [threading.Thread(target=client, args=(i,)) for i in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return {"latencies": dict(latencies), "errors": dict(errors)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--machines", type=int, default=10_000)
    parser.add_argument("--subscriptions", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    options = parser.parse_args()

    from arc_hotpatch.clocks import ScaledClock
    from arc_hotpatch.twin import FleetTwin, generate_fleet

    rss_before = _rss_mb()
    built = time.perf_counter()
    fleet = generate_fleet(machines=options.machines, subscriptions=options.subscriptions, seed=options.seed)
    twin = FleetTwin(fleet, ScaledClock(60), throttling=False)
    base_url = twin.start()
    setup_s = time.perf_counter() - built
    machines = [
        f"/subscriptions/{fleet.subscription_of(m)}/resourceGroups/{m.resource_group}"
        f"/providers/Microsoft.HybridCompute/machines/{m.name}"
        for m in fleet.machines
    ]
    groups = sorted(
        {f"/subscriptions/{fleet.subscription_of(m)}/resourceGroups/{m.resource_group}" for m in fleet.machines}
    )
    rss_loaded = _rss_mb()

    cpu_before = resource.getrusage(resource.RUSAGE_SELF)
    wall_before = time.perf_counter()
    jobs = [(base_url, machines, groups, options.seconds, options.threads, p + 1) for p in range(options.processes)]
    with multiprocessing.get_context("spawn").Pool(options.processes) as pool:
        results = pool.map(_worker, jobs)
    wall = time.perf_counter() - wall_before
    cpu_after = resource.getrusage(resource.RUSAGE_SELF)
    metrics = twin.metrics()
    twin.stop()

    latencies: dict[str, list[float]] = defaultdict(list)
    errors: dict[str, int] = defaultdict(int)
    for result in results:
        for kind, values in result["latencies"].items():
            latencies[kind].extend(values)
        for kind, count in result["errors"].items():
            errors[kind] += count
    everything = [v for values in latencies.values() for v in values]
    twin_cpu_s = (cpu_after.ru_utime - cpu_before.ru_utime) + (cpu_after.ru_stime - cpu_before.ru_stime)
    report = {
        "machines": options.machines,
        "subscriptions": options.subscriptions,
        "clients": options.processes * options.threads,
        "duration_s": round(wall, 2),
        "requests": len(everything),
        "rps": round(len(everything) / wall, 1),
        "p50_ms": round(_percentile(everything, 0.50) * 1000, 2),
        "p99_ms": round(_percentile(everything, 0.99) * 1000, 2),
        "errors": dict(errors),
        "by_kind": {
            kind: {
                "requests": len(values),
                "p50_ms": round(_percentile(values, 0.50) * 1000, 2),
                "p99_ms": round(_percentile(values, 0.99) * 1000, 2),
            }
            for kind, values in sorted(latencies.items())
        },
        "twin_requests_counted": metrics["arm_requests"],
        "twin_cpu_share_of_one_core": round(twin_cpu_s / wall, 2),
        # CPU the twin's process spent per request: the load-independent cost, and what one core could serve.
        "twin_cpu_ms_per_request": round(twin_cpu_s * 1000 / max(1, len(everything)), 3),
        "twin_capacity_rps_per_core_estimate": round(len(everything) / max(twin_cpu_s, 1e-9)),
        "setup_s": round(setup_s, 2),
        "rss_mb_before_fleet": round(rss_before, 1),
        "rss_mb_with_fleet": round(rss_loaded, 1),
        "rss_mb_after_load": round(_rss_mb(), 1),
        "python": sys.version.split()[0],
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
