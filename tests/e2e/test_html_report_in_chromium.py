"""The HTML report as a person sees it: a mixed simulated rollout's page rendered in headless Chromium (Debian's
``chromium``, which ``./dev test`` installs when missing), screenshotted, its counts read from the rendered page,
its filter applied, and no error in the browser's console."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from arc_hotpatch.cli import app

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or "/usr/bin/chromium"
HEADLESS = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
            "--v=0", "--virtual-time-budget=5000"]


def browse(page: Path, *arguments: str, fragment: str = "") -> subprocess.CompletedProcess[str]:
    assert Path(CHROMIUM).exists(), f"{CHROMIUM}: Debian's chromium is needed (./dev test installs it)"
    return subprocess.run([*HEADLESS, *arguments, f"{page.as_uri()}{fragment}"], capture_output=True, text=True,
                          timeout=120, check=True)


@pytest.fixture(scope="module")
def rollout(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    folder = tmp_path_factory.mktemp("report")
    result = CliRunner().invoke(app, ["simulate", "--machines", "80", "--subscriptions", "2", "--seed", "5",
                                      "--report", str(folder / "report.json"), "--html", str(folder / "report.html"),
                                      "--csv", str(folder / "report.csv")])
    assert result.exit_code == 0, result.output
    return folder / "report.html", json.loads((folder / "report.json").read_text())


def test_the_page_shows_the_rollouts_counts_and_logs_no_error(rollout, tmp_path: Path) -> None:
    page, report = rollout
    shot = tmp_path / "report.png"
    rendered = browse(page, "--window-size=1400,2400", f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    dom = browse(page, "--dump-dom")
    shown = dict(re.findall(r'data-state="([a-z_]+)"><b>(\d+)</b>', dom.stdout))
    assert {state: int(count) for state, count in shown.items()} == report["summary"]["by_state"]
    assert f'data-total="machines"><b>{report["summary"]["machines"]}</b>' in dom.stdout
    assert f'{len(report["machines"])} of {len(report["machines"])} machines' in dom.stdout
    escalated = [r for r in report["machines"] if r["state"] == "escalated"]
    assert f"Escalations ({len(escalated)})" in dom.stdout
    for output in (rendered, dom):
        problems = [line for line in output.stderr.splitlines()
                    if "CONSOLE" in line or "Uncaught" in line or "Refused to" in line]
        assert not problems, problems


@pytest.mark.parametrize("state", ["hotpatch_enabled", "ineligible"])
def test_the_filter_narrows_the_machine_table(rollout, state: str) -> None:
    page, report = rollout
    expected = Counter(r["state"] for r in report["machines"])[state]
    assert 0 < expected < len(report["machines"])
    dom = browse(page, "--dump-dom", fragment=f"#state={state}").stdout
    rows = re.findall(r'<tr data-state="([a-z_]+)" data-reason="[a-z_]*"( hidden(?:="")?)?>', dom)
    visible = [row_state for row_state, hidden in rows if not hidden]
    assert len(rows) == len(report["machines"]) and visible == [state] * expected
    assert f"{expected} of {len(report['machines'])} machines" in dom


def test_the_page_is_self_contained(rollout) -> None:
    page, _ = rollout
    text = page.read_text()
    assert not re.search(r'<(script|link|img)[^>]+(src|href)=', text), "no external scripts, styles or images"
    assert "http://" not in text and "https://" not in text.replace("https://127", "")
