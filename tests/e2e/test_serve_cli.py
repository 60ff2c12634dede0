"""``python -m arc_hotpatch serve`` as a person runs it: a separate process, its printed URLs, a dry run over HTTP."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

import requests

from tests.rig import FINISHED, wait_until

REPO = Path(__file__).parents[2]
CHECK_DECIDED = {"excluded", "ineligible", "native_azure_edition", "skipped_disconnected"}
ARM_API_VERSION = "2025-01-13"
STARTUP_S = 30.0


def read_lines(stream: IO[str], into: queue.Queue[str]) -> None:
    """Drain the process's output (a full pipe would block it) into a queue the test reads with a timeout."""
    for line in stream:
        into.put(line)


def test_serve_runs_a_dry_run_over_http() -> None:
    python = REPO / ".venv/bin/python"
    command = [str(python if python.exists() else sys.executable), "-m", "arc_hotpatch", "serve", "--port", "0",
               "--machines", "5", "--no-auth", "--speed", "600"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HOTPATCH_")} | {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    try:
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=read_lines, args=(process.stdout, lines), daemon=True).start()
        printed: list[str] = []
        found: dict[str, str] = {}
        patterns = {"base": r"listening on (http://127\.0\.0\.1:\d+)", "twin": r"Fleet twin \(ARM\): (http://\S+)",
                    "subscription": r"^\s+subscription ([0-9a-f-]{36})\s*$"}
        deadline = time.monotonic() + STARTUP_S
        while len(found) < len(patterns):
            assert process.poll() is None, "serve exited:\n" + "".join(printed)
            assert time.monotonic() < deadline, "serve did not print its URLs:\n" + "".join(printed)
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            printed.append(line)
            for key, pattern in patterns.items():
                match = re.search(pattern, line)
                if match and key not in found:
                    found[key] = match.group(1)

        started = requests.post(f"{found['base']}/api/subscriptions/{found['subscription']}/rollouts",
                                json={"dry_run": True}, timeout=30)
        assert started.status_code == 202, started.text
        status_url = started.json()["statusQueryGetUri"]

        def finished() -> dict | None:
            status = requests.get(status_url, timeout=30).json()
            return status if status["runtimeStatus"] in FINISHED else None

        final = wait_until(finished, "the dry run to finish")
        assert final["runtimeStatus"] == "Completed", final
        report = requests.get(f"{found['base']}/api/rollouts/{started.json()['id']}/report", timeout=30).json()

        rows = report["machines"]
        assert report["summary"]["machines"] == len(rows) == 5
        assert {row["state"] for row in rows} <= CHECK_DECIDED | {"planned"}, [(r["name"], r["state"]) for r in rows]
        planned = [row for row in rows if row["state"] == "planned"]
        assert planned and all(row["actions"] and row["reason"] == "dry_run" for row in planned)
        assert all(row["reboots"] == 0 for row in rows)

        # The twin (ARM) behind the served app: the dry run enabled Hotpatch nowhere.
        arm = requests.get(
            f"{found['twin']}/subscriptions/{found['subscription']}/providers/Microsoft.HybridCompute/machines",
            params={"api-version": ARM_API_VERSION}, headers={"Authorization": "Bearer e2e"}, timeout=30,
        )
        assert arm.status_code == 200, arm.text
        machines = arm.json()["value"]
        assert {m["id"] for m in machines} == {row["id"] for row in rows}
        would_enable = [row for row in planned if "enable_hotpatch" in row["actions"]]
        assert would_enable
        for row in would_enable:
            profile = requests.get(f"{found['twin']}{row['id']}/licenseProfiles/default",
                                   params={"api-version": ARM_API_VERSION}, headers={"Authorization": "Bearer e2e"},
                                   timeout=30)
            assert profile.status_code in (200, 404), profile.text
            product = profile.json().get("properties", {}).get("productProfile", {}) if profile.ok else {}
            hotpatch = [f for f in product.get("productFeatures", []) if f.get("name", "").lower() == "hotpatch"]
            assert not any(f.get("subscriptionStatus") in ("Enable", "Enabling", "Enabled") for f in hotpatch), (
                row["name"], profile.text)
    finally:
        process.terminate()  # this process only, by its pid
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
