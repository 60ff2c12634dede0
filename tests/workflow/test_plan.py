"""``plan``: a dry run through the same ARM endpoint switch production uses; it changes nothing."""

from __future__ import annotations

from typer.testing import CliRunner

from arc_hotpatch.cli import app
from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.policy_flags import policy_from_flags
from arc_hotpatch.runner import run_plan
from arc_hotpatch.twin import FleetTwin
from arc_hotpatch.twin.fleet import load_scenario
from core.policy import load_policy

SCENARIO = {
    "seed": 4,
    "subscriptions": 2,
    "groups": [
        {"count": 2, "machine": {"name": "web", "vbs_status": 0}},
        {"count": 1, "machine": {"name": "old", "os_version": "10.0.26100.1000"}},
        {"count": 1, "machine": {"name": "done", "hotpatch": "Enabled", "os_version": "10.0.26100.4000"}},
        {"count": 2, "machine": {"name": "other", "subscription": 1}},
    ],
}


def test_plan_against_the_twin_changes_nothing(monkeypatch) -> None:
    clock = VirtualClock()
    with FleetTwin(load_scenario(SCENARIO), clock) as twin:
        monkeypatch.setenv("HOTPATCH_ARM_CA_FILE", twin.ca_file or "")  # the twin's HTTPS, trusted as a user does
        url = twin.base_url or ""
        before = {m.name: m for m in twin.machines()}
        # App settings name the endpoint (as HOTPATCH_ARM_ENDPOINT would in Azure); flags scope the run.
        base = load_policy({"HOTPATCH_ARM_ENDPOINT": url, "HOTPATCH_DRY_RUN": "false"})
        policy = policy_from_flags(base, ["--subscriptions", twin.subscription_ids[0], "--reboot-policy", "auto"])
        report = run_plan(policy, clock=clock)
        rows = {r["name"]: r for r in report["machines"]}
        assert set(rows) == {"web-1", "web-2", "old", "done"}, "only the named subscription"
        assert rows["web-1"]["state"] == "planned"
        assert rows["web-1"]["actions"] == ["enable_vsm", "licensing_workaround", "reboot", "enable_hotpatch"]
        assert (rows["old"]["state"], rows["old"]["reason"]) == ("ineligible", "build_too_old")
        assert (rows["done"]["state"], rows["done"]["actions"]) == ("planned", [])
        for machine in twin.machines():
            was = before[machine.name]
            assert machine.registry == was.registry and machine.boot_times == was.boot_times
            assert machine.license_profile == was.license_profile and not machine.license_writes
            assert {r.script for r in machine.runs} <= {"readiness"}


def test_plan_without_subscriptions_reads_every_readable_one(monkeypatch) -> None:
    clock = VirtualClock()
    with FleetTwin(load_scenario(SCENARIO), clock) as twin:
        monkeypatch.setenv("HOTPATCH_ARM_CA_FILE", twin.ca_file or "")  # the twin's HTTPS, trusted as a user does
        url = twin.base_url or ""
        report = run_plan(load_policy({"HOTPATCH_ARM_ENDPOINT": url}), clock=clock)
        assert {r["subscription_id"] for r in report["machines"]} == set(twin.subscription_ids)
        assert report["summary"]["machines"] == 6


def test_plan_rejects_a_bad_flag_naming_it() -> None:
    result = CliRunner().invoke(app, ["plan", "--reboot-policy", "sometimes"])
    assert result.exit_code == 2
    assert "--reboot-policy" in result.output and "auto | approval | window | never" in result.output
    result = CliRunner().invoke(app, ["plan", "--arm-endpoint", "management.azure.com"])
    assert result.exit_code == 2 and "--arm-endpoint" in result.output


def test_a_subscription_that_cannot_be_read_is_reported_and_the_rest_rolls_out(monkeypatch) -> None:
    clock = VirtualClock()
    with FleetTwin(load_scenario(SCENARIO), clock) as twin:
        monkeypatch.setenv("HOTPATCH_ARM_CA_FILE", twin.ca_file or "")  # the twin's HTTPS, trusted as a user does
        url = twin.base_url or ""
        missing = "00000000-0000-0000-0000-00000000dead"
        policy = load_policy({"HOTPATCH_ARM_ENDPOINT": url,
                              "HOTPATCH_SUBSCRIPTIONS": f"{missing},{twin.subscription_ids[1]}"})
        report = run_plan(policy, clock=clock)
        assert {r["name"] for r in report["machines"]} == {"other-1", "other-2"}
        (error,) = report["rollout"]["errors"]
        assert error["subscription_id"] == missing and "SubscriptionNotFound" in error["error"]


def test_plan_against_an_endpoint_whose_certificate_is_not_trusted_fails_at_once(monkeypatch) -> None:
    import pytest

    from arc_hotpatch.runner import PlanError

    monkeypatch.delenv("HOTPATCH_ARM_CA_FILE", raising=False)
    clock = VirtualClock()  # nobody advances it: a retry's back-off would wait forever
    with (FleetTwin(load_scenario(SCENARIO), clock) as twin,
          pytest.raises(PlanError, match=r"cannot reach ARM at https://127\.0\.0\.1:.*CERTIFICATE_VERIFY_FAILED")):
        run_plan(load_policy({"HOTPATCH_ARM_ENDPOINT": twin.base_url or ""}), clock=clock)
