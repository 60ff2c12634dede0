"""``run_twin_cli``: prints where to reach the twin, serves until stopped."""

from __future__ import annotations

import io
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

from arc_hotpatch.clocks import current_clock
from arc_hotpatch.twin import default_fleet
from arc_hotpatch.twin.cli import run_twin_cli

REPO = Path(__file__).resolve().parents[2]


def _wait_for_line(output: io.StringIO, pattern: str, timeout_s: float = 20) -> re.Match[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(pattern, output.getvalue())
        if match:
            return match
        time.sleep(0.02)
    raise AssertionError(f"no {pattern!r} in:\n{output.getvalue()}")


def test_run_twin_cli_prints_url_subscriptions_and_curl_and_serves():
    fleet = default_fleet()
    out, stop = io.StringIO(), threading.Event()
    before = current_clock()
    thread = threading.Thread(target=run_twin_cli, args=(0, fleet, "chaos", 600.0), kwargs={"out": out, "stop": stop})
    thread.start()
    try:
        url = _wait_for_line(out, r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        text = _wait_for_line(out, r"Ctrl-C to stop").string
        assert all(subscription in text for subscription in fleet.subscription_ids)
        assert "faults chaos" in text and "x600" in text
        curl = _wait_for_line(out, r'curl -H "Authorization: Bearer twin" "([^"]+)"').group(1)
        for _ in range(5):  # chaos may inject a fault; curl users would retry too
            response = requests.get(curl, headers={"Authorization": "Bearer twin"}, timeout=10)
            if response.status_code == 200:
                break
        assert response.status_code == 200 and response.json()["value"]
        assert curl.startswith(url)
        assert requests.get(curl, timeout=10).status_code == 401
    finally:
        stop.set()
        thread.join(timeout=30)
    assert "Fleet twin stopped." in out.getvalue()
    assert current_clock() is before


def test_ctrl_c_stops_it():
    code = (
        "from arc_hotpatch.twin import default_fleet\n"
        "from arc_hotpatch.twin.cli import run_twin_cli\n"
        "run_twin_cli(0, default_fleet(), None, 60.0)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if "Ctrl-C to stop" in line:
                break
        process.send_signal(signal.SIGINT)
        remaining, errors = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors
    assert "Fleet twin stopped." in remaining


def test_the_twin_starts_its_clock_at_the_start_date_a_machine_reads_it():
    from datetime import UTC, datetime

    from arc_hotpatch.twin import load_scenario

    out, stop = io.StringIO(), threading.Event()
    start = datetime(2026, 7, 20, 8, tzinfo=UTC)
    fleet = load_scenario({"seed": 1, "groups": [{"machine": {"name": "m"}}]})
    thread = threading.Thread(target=run_twin_cli, args=(0, fleet, None, 60.0),
                              kwargs={"out": out, "stop": stop, "start": start})
    thread.start()
    try:
        url = _wait_for_line(out, r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        assert "from 2026-07-20 08:00 UTC" in _wait_for_line(out, r"Ctrl-C to stop").string
        truth = requests.get(f"{url}/_twin/machines/{fleet.machines[0].name}", timeout=10).json()
        assert truth["now"].startswith("2026-07-20T08:") and "2026-06-01" < truth["booted_at_start"] < "2026-07-20"
    finally:
        stop.set()
        thread.join(timeout=30)
