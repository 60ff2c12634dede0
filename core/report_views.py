"""The report (SPEC §5) as an operator reads it: one self-contained HTML page, and CSV.

Pure functions of the report's JSON (the CLI writes them, ``GET /api/rollouts/{id}/report?format=html|csv``
serves them), so a running rollout's page shows what is known so far. The page has no external scripts,
fonts or styles: inline CSS, an inline SVG timeline and a few lines of inline script for the table filter.
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from datetime import datetime
from html import escape
from typing import Any

from .vocabulary import FinalState

# From each escalation reason to what happened and the operator's next step: the README's operator guide shows
# this very table (tests/domain/test_report_views.py keeps the two equal).
NEXT_STEPS: tuple[tuple[str, str, str], ...] = (
    ("run_command_failed", "a Run Command kept failing (3+ attempts) although the agent's version and configuration "
     "allow it (those are `agent_too_old` / `run_command_blocked`, found before any script)",
     "check the Run Command extension's logs on the machine (`azcmagent show`, "
     "`C:\\ProgramData\\GuestConfig\\extension_logs`), then re-run"),
    ("reboot_timeout", "the machine did not come back (Connected, later boot time) within the reboot timeout",
     "check the console/hypervisor; the changes are applied, a re-run verifies and continues"),
    ("vsm_not_running", "VSM still not running after enabling it and rebooting",
     "firmware/hypervisor VBS support (nested virtualization, Gen 2 VM, vendor docs: seed)"),
    ("vbs_hardware", "escalated (not `ineligible`): no signal could tell the firmware type",
     "check the firmware on the machine (msinfo32, BIOS Mode), then re-run"),
    ("enable_failed", "a level of enablement reported `Failed` (Azure's error text in `detail`)",
     "usually VSM or licensing; check the machine's Hotpatch blade and agent logs"),
    ("enable_action_required", "the machine reports `hotpatchEnablementStatus` `ActionRequired` (its error text in "
     "`detail`)", "do what the detail says (often: install the latest baseline and restart), then re-run"),
    ("agent_too_old", "the Connected Machine agent is older than 1.33: Run Command cannot run",
     "upgrade the agent, then re-run"),
    ("run_command_blocked", "the agent's configuration refuses Run Command (monitor mode, extensions disabled, "
     "blocklist, allowlist)", "run the `azcmagent config` command the detail names on the machine, then re-run"),
    ("enable_stuck", "still `Enabling` after the enable timeout",
     "the October 2025 licensing issue (`--workaround-mode proactive` or `reactive`), or agent connectivity"),
    ("approval_timeout", "nobody approved the reboot in time", "approve sooner, or use `window`"),
    ("reboot_required", "reboot policy `never` (or a rejected approval) and the machine needs one",
     "nothing was changed; pick a reboot policy for it"),
    ("orchestration_failed", "the machine's orchestration crashed (a bug or an unexpected ARM payload; see `detail`)",
     "report it with the detail"),
)
_NEXT_STEP = {reason: step for reason, _, step in NEXT_STEPS}

CSV_FIELDS = ("id", "subscription_id", "name", "state", "reason", "actions", "reboots", "os_version", "baseline",
              "wave", "next_update", "next_update_detail", "started_at", "finished_at", "detail")


def report_csv(report: dict[str, Any]) -> str:
    """One row per machine with the report's fields (``actions`` joined by ``;``)."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in report.get("machines") or []:
        writer.writerow({**{field: row.get(field, "") for field in CSV_FIELDS},
                         "actions": ";".join(row.get("actions") or [])})
    return out.getvalue()


def _code(text: str) -> str:
    """The table's `code` spans as <code>, everything escaped."""
    parts = escape(text).split("`")
    return "".join(f"<code>{part}</code>" if index % 2 else part for index, part in enumerate(parts))


def _time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
    except ValueError:
        return None


def _timeline(rows: list[dict[str, Any]], width: int = 900, height: int = 160) -> str:
    """Machines in flight over time (from each row's started_at / finished_at), as an inline SVG step line."""
    spans = [(s, f) for r in rows if (s := _time(r.get("started_at", ""))) and (f := _time(r.get("finished_at", "")))]
    if not spans:
        return '<p class="muted">No machine has finished yet.</p>'
    changes = sorted([(s, 1) for s, _ in spans] + [(f, -1) for _, f in spans], key=lambda c: (c[0], c[1]))
    start, end = changes[0][0], changes[-1][0]
    total = max((end - start).total_seconds(), 1.0)
    points, level, peak = [], 0, 0
    for moment, step in changes:
        x = 40 + (moment - start).total_seconds() / total * (width - 50)
        points.append((x, level))
        level += step
        peak = max(peak, level)
        points.append((x, level))
    scale = (height - 30) / max(peak, 1)
    path = " ".join(f"{x:.1f},{height - 20 - y * scale:.1f}" for x, y in points)
    return (
        f'<svg id="timeline" role="img" aria-label="machines in flight over time" viewBox="0 0 {width} {height}" '
        f'width="100%" height="{height}"><polyline fill="none" stroke="#2563eb" stroke-width="2" points="{path}"/>'
        f'<line x1="40" y1="{height - 20}" x2="{width - 10}" y2="{height - 20}" stroke="#999"/>'
        f'<text x="40" y="{height - 5}" font-size="11">{escape(start.strftime("%Y-%m-%d %H:%M"))} UTC</text>'
        f'<text x="{width - 10}" y="{height - 5}" font-size="11" text-anchor="end">'
        f'{escape(end.strftime("%Y-%m-%d %H:%M"))} UTC</text>'
        f'<text x="4" y="14" font-size="11">peak {peak}</text></svg>'
    )


def _waves(report: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    changed = Counter(r.get("wave") for r in rows if r.get("wave") and r.get("actions"))
    escalated = Counter(r.get("wave") for r in rows if r.get("wave") and r.get("state") == FinalState.ESCALATED.value)
    halted = sum(r.get("state") == FinalState.HALTED.value for r in rows)
    rollout = report.get("rollout") or {}
    waves = sorted(set(changed) | set(escalated))
    halted_in = rollout.get("wave") or (waves[-1] if waves else 1)
    waves = sorted(set(waves) | ({halted_in} if halted else set()))
    if not waves:
        return '<p class="muted">No machine was changed in a wave (a dry run, or nothing needed a change).</p>'
    body = "".join(
        f'<tr data-wave="{w}"><td>{w}</td><td class="n">{changed[w]}</td><td class="n">{escalated[w]}</td>'
        f'<td class="n">{halted if w == halted_in else 0}</td></tr>' for w in waves)
    return ('<table id="waves"><thead><tr><th>wave</th><th>changed</th><th>escalated</th><th>halted</th></tr>'
            f"</thead><tbody>{body}</tbody></table>")


_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#111}
h1{font-size:20px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 8px}.muted{color:#666}
.cards{display:flex;flex-wrap:wrap;gap:10px}
.card{border:1px solid #ddd;border-radius:8px;padding:8px 12px;min-width:120px}
.card b{display:block;font-size:22px}.escalated b{color:#b91c1c}.halted b{color:#b45309}
.hotpatch_enabled b{color:#15803d}table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #eee;
padding:4px 6px;text-align:left;vertical-align:top}td.n{text-align:right}code{background:#f3f4f6;padding:0 3px}
select{margin-right:12px}
"""

_SCRIPT = """
(function () {
  var state = document.getElementById('state-filter'), reason = document.getElementById('reason-filter');
  var rows = document.querySelectorAll('#machines tbody tr'), shown = document.getElementById('shown-count');
  function apply() {
    var count = 0;
    rows.forEach(function (row) {
      var visible = (!state.value || row.dataset.state === state.value) &&
                    (!reason.value || row.dataset.reason === reason.value);
      row.hidden = !visible;
      if (visible) { count += 1; }
    });
    shown.textContent = count + ' of ' + rows.length + ' machines';
  }
  var wanted = new URLSearchParams(location.hash.slice(1));
  if (wanted.get('state')) { state.value = wanted.get('state'); }
  if (wanted.get('reason')) { reason.value = wanted.get('reason'); }
  state.addEventListener('change', apply);
  reason.addEventListener('change', apply);
  apply();
})();
"""


def report_html(report: dict[str, Any], title: str = "Hotpatch rollout report") -> str:
    """The whole report on one self-contained page (works for a running rollout: what is known so far)."""
    rows: list[dict[str, Any]] = list(report.get("machines") or [])
    summary = report.get("summary") or {}
    by_state: dict[str, int] = summary.get("by_state") or dict(Counter(r.get("state") for r in rows))
    rollout = report.get("rollout") or {}
    about = ", ".join(f"{k} {escape(str(rollout[k]))}" for k in ("id", "status", "phase") if rollout.get(k))
    cards = "".join(
        f'<div class="card {escape(state)}" data-state="{escape(state)}"><b>{count}</b>{escape(state)}</div>'
        for state, count in sorted(by_state.items(), key=lambda item: -item[1]))
    cards += (f'<div class="card" data-total="machines"><b>{summary.get("machines", len(rows))}</b>machines</div>'
              f'<div class="card"><b>{summary.get("reboots", 0)}</b>reboots</div>')
    forecast = Counter(r.get("next_update") or "unknown" for r in rows)
    escalations = [r for r in rows if r.get("state") == FinalState.ESCALATED.value]
    escalation_rows = "".join(
        f'<tr data-reason="{escape(r.get("reason", ""))}"><td>{escape(r.get("name", ""))}</td>'
        f'<td><code>{escape(r.get("reason", ""))}</code></td><td>{escape(r.get("detail", ""))}</td>'
        f'<td>{_code(_NEXT_STEP.get(r.get("reason", ""), "see the detail"))}</td></tr>' for r in escalations)
    machine_rows = "".join(
        f'<tr data-state="{escape(r.get("state", ""))}" data-reason="{escape(r.get("reason", ""))}">'
        f'<td>{escape(r.get("name", ""))}</td><td>{escape(r.get("state", ""))}</td><td>{escape(r.get("reason", ""))}'
        f'</td><td>{escape(", ".join(r.get("actions") or []))}</td><td class="n">{r.get("reboots", 0)}</td>'
        f'<td>{escape(r.get("os_version", ""))}</td><td>{escape(r.get("baseline", ""))}</td>'
        f'<td>{escape(r.get("next_update", ""))}</td><td>{escape(r.get("detail", ""))}</td></tr>' for r in rows)

    def options(values: list[str]) -> str:
        return '<option value="">all</option>' + "".join(
            f'<option value="{escape(v)}">{escape(v)}</option>' for v in sorted(set(values)) if v)

    metrics = report.get("metrics")
    metrics_line = (f'<p class="muted">Simulated: {escape(json.dumps(metrics.get("virtual_makespan_s")))} s of virtual '
                    f'time, {escape(json.dumps(metrics.get("arm_requests")))} ARM requests.</p>' if metrics else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{_STYLE}</style></head>
<body>
<h1>{escape(title)}</h1><p class="muted">{about}</p>{metrics_line}
<h2>Summary</h2><div class="cards" id="summary">{cards}</div>
<p class="muted" id="forecast">Next update: hotpatch {forecast["hotpatch"]}, reboot {forecast["reboot"]},
unknown {forecast["unknown"]}.</p>
<h2>Waves</h2>{_waves(report, rows)}
<h2>Machines in flight</h2>{_timeline(rows)}
<h2>Escalations ({len(escalations)})</h2>
<table id="escalations"><thead><tr><th>machine</th><th>reason</th><th>detail</th><th>next step</th></tr></thead>
<tbody>{escalation_rows}</tbody></table>
<h2>Machines</h2>
<p><label>state <select id="state-filter">{options([r.get("state", "") for r in rows])}</select></label>
<label>reason <select id="reason-filter">{options([r.get("reason", "") for r in rows])}</select></label>
<span id="shown-count">{len(rows)} of {len(rows)} machines</span></p>
<table id="machines"><thead><tr><th>machine</th><th>state</th><th>reason</th><th>actions</th><th>reboots</th>
<th>OS version</th><th>baseline</th><th>next update</th><th>detail</th></tr></thead>
<tbody>{machine_rows}</tbody></table>
<script>{_SCRIPT}</script>
</body></html>
"""
