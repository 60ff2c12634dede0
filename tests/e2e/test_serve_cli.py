"""``python -m arc_hotpatch serve`` as a person runs it: a separate process, its printed URLs, a dry run over HTTP,
the scope of HOTPATCH_SUBSCRIPTIONS kept, and the twin's truth read with a plain GET."""

from __future__ import annotations

import os

import pytest
import requests

from arc_hotpatch.twin.fleet import subscription_ids_for
from tests.rig import FINISHED, REPO, ServeProcess, wait_until

CHECK_DECIDED = {"excluded", "ineligible", "native_azure_edition", "skipped_disconnected"}
ARM_API_VERSION = "2025-01-13"
STARTUP_S = 30.0


def test_serve_runs_a_dry_run_over_http() -> None:
    in_scope, out_of_scope = subscription_ids_for(0, 2)
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HOTPATCH_")} | {
        "HOTPATCH_SUBSCRIPTIONS": in_scope}  # the app setting names one of the two
    # No key anywhere: like func start, serve does not enforce keys locally unless --auth.
    serve = ServeProcess(["--port", "0", "--machines", "10", "--subscriptions", "2", "--seed", "0",
                          "--speed", "600", "--start", "2026-02-02"], cwd=REPO, env=environment)
    try:
        found = serve.wait_for({
            "base": r"listening on (http://127\.0\.0\.1:\d+)", "twin": r"^Fleet twin: (https://127\.0\.0\.1:\d+)$",
            "ca_file": r"^\s+CA certificate: (\S+)$", "subscription": r"^\s+subscription ([0-9a-f-]{36})\s*$",
            "outside": r"^\s+subscription ([0-9a-f-]{36})\s+\(out of scope",
            "ledger": r"Audit ledger: Azurite table service (http://127\.0\.0\.1:\d+)"}, STARTUP_S)
        printed = serve.printed

        assert (found["subscription"], found["outside"]) == (in_scope, out_of_scope), "".join(printed)
        refused = requests.post(f"{found['base']}/api/subscriptions/{out_of_scope}/rollouts", json={"dry_run": True},
                                timeout=30)
        assert refused.status_code == 403, refused.text

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
        assert report["summary"]["machines"] == len(rows) and {row["subscription_id"] for row in rows} == {in_scope}
        assert {row["state"] for row in rows} <= CHECK_DECIDED | {"planned"}, [(r["name"], r["state"]) for r in rows]
        planned = [row for row in rows if row["state"] == "planned"]
        assert planned and all(row["actions"] and row["reason"] == "dry_run" for row in planned)
        assert all(row["reboots"] == 0 for row in rows)
        # --start placed the rehearsal in February 2026: its next update is the 10th's (a hotpatch month).
        assert all(row["started_at"].startswith("2026-02-02") for row in rows), [r["started_at"] for r in rows]
        forecast = [row["next_update_detail"] for row in rows if row["next_update_detail"]]
        assert forecast and all(detail.startswith("2026-02-10 update") for detail in forecast)

        # The twin (ARM) behind the served app: the dry run enabled Hotpatch nowhere.
        arm = requests.get(
            f"{found['twin']}/subscriptions/{found['subscription']}/providers/Microsoft.HybridCompute/machines",
            params={"api-version": ARM_API_VERSION}, headers={"Authorization": "Bearer e2e"}, timeout=30,
            verify=found["ca_file"],  # as curl --cacert: the twin's HTTPS, its CA as serve printed it
        )
        assert arm.status_code == 200, arm.text
        machines = arm.json()["value"]
        assert {m["id"] for m in machines} == {row["id"] for row in rows}
        for row in rows:  # the twin's truth, outside ARM, with a plain GET: a dry run rebooted nothing
            truth = requests.get(f"{found['twin']}/_twin/machines/{row['name']}", timeout=30, verify=found["ca_file"])
            assert truth.status_code == 200, truth.text
            assert (truth.json()["id"], truth.json()["boot_count"], truth.json()["boots"]) == (row["id"], 0, [])
        would_enable = [row for row in planned if "enable_hotpatch" in row["actions"]]
        assert would_enable
        for row in would_enable:
            profile = requests.get(f"{found['twin']}{row['id']}/licenseProfiles/default",
                                   params={"api-version": ARM_API_VERSION}, headers={"Authorization": "Bearer e2e"},
                                   timeout=30, verify=found["ca_file"])
            assert profile.status_code in (200, 404), profile.text
            product = profile.json().get("properties", {}).get("productProfile", {}) if profile.ok else {}
            hotpatch = [f for f in product.get("productFeatures", []) if f.get("name", "").lower() == "hotpatch"]
            assert not any(f.get("subscriptionStatus") in ("Enable", "Enabling", "Enabled") for f in hotpatch), (
                row["name"], profile.text)
    finally:
        serve.stop()
    # SIGTERM (kill <pid>, as a service manager stops it) is an orderly stop, like Ctrl-C: the host, the twin and
    # Azurite stop, and the twin's CA file (serve's own, in the temp folder) is removed.
    printed = serve.output_after_exit()
    assert serve.process.returncode == 0, printed
    assert "Stopping the local durable host." in printed
    assert not os.path.exists(found["ca_file"]), found["ca_file"]
    with pytest.raises(requests.ConnectionError):
        requests.get(found["ledger"], timeout=5)


def test_serve_auth_requires_the_printed_key_and_prints_its_results_on_stdout() -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("HOTPATCH_")}
    serve = ServeProcess(["--port", "0", "--machines", "3", "--seed", "0", "--auth", "--speed", "600"],
                         cwd=REPO, env=environment, stdout_only=True)
    try:
        found = serve.wait_for({
            "base": r"listening on (http://127\.0\.0\.1:\d+)", "twin": r"^Fleet twin: (https://127\.0\.0\.1:\d+)$",
            "key": r"^\s+function key:\s+(\S+)$", "subscription": r"^\s+subscription ([0-9a-f-]{36})\s*$"}, STARTUP_S)
        url = f"{found['base']}/api/subscriptions/{found['subscription']}/rollouts"
        refused = requests.post(url, json={"dry_run": True}, timeout=30)
        assert refused.status_code == 401, refused.text
        started = requests.post(url, params={"code": found["key"]}, json={"dry_run": True}, timeout=30)
        assert started.status_code == 202, started.text
    finally:
        serve.stop()
