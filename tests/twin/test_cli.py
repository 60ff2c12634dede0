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

import pytest
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
        url = _wait_for_line(out, r"listening on (https://127\.0\.0\.1:\d+)").group(1)
        text = _wait_for_line(out, r"Ctrl-C to stop").string
        assert all(subscription in text for subscription in fleet.subscription_ids)
        assert "faults chaos" in text and "x600" in text
        curl = _wait_for_line(out, r'curl --cacert "[^"]+" -H "Authorization: Bearer twin" "([^"]+)"').group(1)
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
        # As in a terminal: a suite launched in the background (`cmd &`) hands its children SIGINT ignored.
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\n"
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
        url = _wait_for_line(out, r"listening on (https://127\.0\.0\.1:\d+)").group(1)
        assert "from 2026-07-20 08:00 UTC" in _wait_for_line(out, r"Ctrl-C to stop").string
        truth = requests.get(f"{url}/_twin/machines/{fleet.machines[0].name}", timeout=10).json()
        assert truth["now"].startswith("2026-07-20T08:") and "2026-06-01" < truth["booted_at_start"] < "2026-07-20"
    finally:
        stop.set()
        thread.join(timeout=30)


def test_a_plain_sdk_client_uses_the_https_twin_with_its_ca_file_and_no_tls_serves_http(tmp_path):
    import certifi
    from azure.mgmt.hybridcompute import HybridComputeManagementClient

    from arc_hotpatch.twin import load_scenario
    from core.azure_clients import StaticTokenCredential

    fleet = load_scenario({"seed": 1, "groups": [{"machine": {"name": "m"}}]})
    ca_file = tmp_path / "certs" / "twin-ca.pem"
    out, stop = io.StringIO(), threading.Event()
    thread = threading.Thread(target=run_twin_cli, args=(0, fleet, None, 60.0),
                              kwargs={"out": out, "stop": stop, "ca_file": str(ca_file)})
    thread.start()
    try:
        url = _wait_for_line(out, r"listening on (https://127\.0\.0\.1:\d+)").group(1)
        assert _wait_for_line(out, r"CA certificate: (\S+)\n").group(1) == str(ca_file)
        assert ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        # What any ARM client does: a bearer token over TLS, the twin's CA trusted (the SDK's default api-version).
        with HybridComputeManagementClient(StaticTokenCredential("any"), fleet.subscription_ids[0], base_url=url,
                                           connection_verify=str(ca_file)) as client:
            assert [m.name for m in client.machines.list_by_subscription()] == ["m"]
        port = url.rsplit(":", 1)[1]  # the certificate names localhost too
        assert requests.get(f"https://localhost:{port}/_twin/machines/m", timeout=10, verify=str(ca_file)).ok
        with pytest.raises(requests.exceptions.SSLError):  # the public trust store does not know the twin
            requests.get(f"{url}/_twin/machines/m", timeout=10, verify=certifi.where())
    finally:
        stop.set()
        thread.join(timeout=30)

    out, stop = io.StringIO(), threading.Event()
    thread = threading.Thread(target=run_twin_cli, args=(0, fleet, None, 60.0),
                              kwargs={"out": out, "stop": stop, "tls": False})
    thread.start()
    try:
        url = _wait_for_line(out, r"listening on (http://127\.0\.0\.1:\d+)").group(1)
        assert "CA certificate" not in out.getvalue()
        assert requests.get(f"{url}/_twin/machines/m", timeout=10).json()["name"] == "m"
    finally:
        stop.set()
        thread.join(timeout=30)


def test_the_twin_command_names_a_ca_file_it_cannot_write(tmp_path):
    from typer.testing import CliRunner

    from arc_hotpatch.cli import app

    blocker = tmp_path / "file"
    blocker.write_text("")
    result = CliRunner().invoke(app, ["twin", "--ca-file", str(blocker / "ca.pem")])
    assert result.exit_code == 2 and "--ca-file" in result.output and "cannot write" in result.output
