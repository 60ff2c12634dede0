"""The report as HTML and CSV (pure functions of the report JSON) and the reason -> next step table they share
with the README."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from core.report_views import CSV_FIELDS, NEXT_STEPS, report_csv, report_html
from core.vocabulary import Reason

README = Path(__file__).parents[2] / "README.md"
ROWS = [
    {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/a", "subscription_id": "s",
     "name": "a", "state": "escalated", "reason": "agent_too_old", "actions": [], "reboots": 0,
     "detail": "agent 1.31 <b>old</b>", "started_at": "2026-01-05T08:00:00Z", "finished_at": "2026-01-05T08:01:00Z"},
    {"id": "/subscriptions/s/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/b", "subscription_id": "s",
     "name": "b", "state": "hotpatch_enabled", "reason": "enabled", "actions": ["licensing_workaround", "reboot"],
     "reboots": 1, "wave": 1, "next_update": "reboot", "started_at": "2026-01-05T08:00:00Z",
     "finished_at": "2026-01-05T08:40:00Z"},
]
REPORT = {"summary": {"machines": 2, "by_state": {"escalated": 1, "hotpatch_enabled": 1}, "reboots": 1,
                      "escalations": 1}, "machines": ROWS, "rollout": {"id": "r-1", "status": "Running", "wave": 1}}


def test_the_readme_shows_the_very_next_step_table() -> None:
    text = README.read_text()
    table = text[text.index("| reason | what happened | what to do |"):].split("\n\n", 1)[0].splitlines()[2:]
    rows = [tuple(cell.strip() for cell in line.strip("|").split(" | ")) for line in table]
    assert rows == [(f"`{reason}`", what, step) for reason, what, step in NEXT_STEPS]


def test_every_escalation_reason_has_a_next_step() -> None:
    escalations = {Reason.RUN_COMMAND_FAILED, Reason.REBOOT_TIMEOUT, Reason.VSM_NOT_RUNNING, Reason.VBS_HARDWARE,
                   Reason.ENABLE_FAILED, Reason.ENABLE_ACTION_REQUIRED, Reason.AGENT_TOO_OLD,
                   Reason.RUN_COMMAND_BLOCKED, Reason.ENABLE_STUCK, Reason.APPROVAL_TIMEOUT, Reason.REBOOT_REQUIRED,
                   Reason.ORCHESTRATION_FAILED}
    assert {reason for reason, _, _ in NEXT_STEPS} == {r.value for r in escalations}


def test_csv_has_one_row_per_machine_with_the_reports_fields() -> None:
    rows = list(csv.DictReader(io.StringIO(report_csv(REPORT))))
    assert tuple(rows[0]) == CSV_FIELDS
    assert [(r["name"], r["state"], r["actions"], r["wave"]) for r in rows] == [
        ("a", "escalated", "", ""), ("b", "hotpatch_enabled", "licensing_workaround;reboot", "1")]


def test_html_escapes_what_machines_report_and_shows_counts_waves_timeline_and_next_steps() -> None:
    page = report_html(REPORT)
    assert "<b>old</b>" not in page and "agent 1.31 &lt;b&gt;old&lt;/b&gt;" in page
    assert 'data-state="escalated"><b>1</b>' in page and 'data-state="hotpatch_enabled"><b>1</b>' in page
    assert re.search(r'<tr data-wave="1"><td>1</td><td class="n">1</td>', page)
    assert '<svg id="timeline"' in page and "peak 2" in page
    assert "upgrade the agent, then re-run" in page  # agent_too_old's next step
    assert "status Running" in page  # a running rollout: what is known so far


# SPEC §5: every machine row's fields, in the CSV too (the header is spelled out: CSV_FIELDS is what is tested).
SPEC_ROW_FIELDS = ("id", "subscription_id", "name", "state", "reason", "actions", "reboots", "os_version", "baseline",
                   "next_update", "next_update_detail", "started_at", "finished_at")


def test_csv_carries_every_field_spec_5_gives_a_machine() -> None:
    row = {**ROWS[1], "os_version": "10.0.26100.4000", "baseline": "current", "next_update_detail": "baseline month"}
    (parsed,) = csv.DictReader(io.StringIO(report_csv({"machines": [row]})))
    assert [field for field in SPEC_ROW_FIELDS if field not in parsed] == []
    assert {field: parsed[field] for field in SPEC_ROW_FIELDS} == {
        **{field: str(row[field]) for field in SPEC_ROW_FIELDS}, "actions": "licensing_workaround;reboot"}


def test_html_escapes_machine_names_and_counts_rows_without_a_forecast_as_unknown() -> None:
    rows = [{**ROWS[0], "name": "<img src=x onerror=alert(1)>"}, ROWS[1]]
    page = report_html({"machines": rows})
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert re.search(r"Next update: hotpatch 0, reboot 1,\s+unknown 1\.", page)
