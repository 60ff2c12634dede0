"""Requests narrow, settings define the maximum; hostile bodies get bounded, clean errors (SPEC §6), over real
HTTP against the served app: the app settings are ``HOTPATCH_*`` in the environment, the body of a rollout start
may only make the run do less (a 400 naming the field otherwise), a subscription outside the configured scope is
a 403, and oversized, deep, duplicated or mistyped bodies are 413/400 with short messages, never a 500."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.rig import Served, ServeFleet

OLD = "10.0.26100.4000"
FIXED_FIELDS: dict[str, Any] = {
    # the attack: a newline-separated tag name un-excluded tagged machines
    "exclude_tag": "a\nb",
    "escalation_webhook": "http://169.254.169.254/metadata",
    "arm_endpoint": "http://127.0.0.1:1/",
    "cloud": "AzureChinaCloud",
    "subscriptions": ["0b1f6471-1bf0-4dda-aec3-cb9272f09590"],
    "schedule": "0 0 3 * * Mon",
    "baselines_file": "/etc/passwd",
    "workaround_mode": "off",
    "enable_poll_interval": "10s",
    "reboot_poll_interval": "10s",
    "run_command_attempts": 1,
    "maintenance_window": "Mon 00:00-23:00",
    "guardrail": 0.1,  # not in SPEC §6's list, even stricter
}
WIDENING: list[tuple[dict[str, Any], str]] = [
    ({"reboot_policy": "auto"}, "HOTPATCH_REBOOT_POLICY is 'approval'"),
    ({"reboot_policy": "window"}, "stricter reboot policy"),
    ({"dry_run": False}, "HOTPATCH_DRY_RUN"),
    ({"concurrency": 6}, "HOTPATCH_CONCURRENCY allows at most 5"),
    ({"enable_timeout": "2h"}, "HOTPATCH_ENABLE_TIMEOUT allows at most 1800s"),
    ({"reboot_timeout": 31}, "HOTPATCH_REBOOT_TIMEOUT"),
    ({"approval_timeout": "2d"}, "HOTPATCH_APPROVAL_TIMEOUT"),
    ({"run_command_timeout": "11m"}, "HOTPATCH_RUN_COMMAND_TIMEOUT"),
    ({"resource_group": "rg-other"}, "HOTPATCH_RESOURCE_GROUP limits the scope to resource group 'rg-main'"),
]


def strict(served: Served) -> None:
    served.set_policy(reboot_policy="approval", dry_run="true", concurrency="5", guardrail="20%",
                      resource_group="rg-main", enable_timeout="30m", reboot_timeout="30m",
                      approval_timeout="1d", run_command_timeout="10m")


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:500])
    assert len(response.content) < 2000, "an error is short"
    return response.json()["error"]


@pytest.fixture
def served(serve_fleet: ServeFleet) -> Served:
    served = serve_fleet({"m": {"resource_group": "rg-main", "os_version": OLD}})
    strict(served)
    return served


def test_fields_only_the_settings_may_set_are_400_naming_the_field(served: Served) -> None:
    for field, value in FIXED_FIELDS.items():
        error = error_of(served.start_rollout({field: value}), 400)
        assert error["code"] == "OverrideNotAllowed", error
        assert error["message"].startswith(f"{field} cannot be set in a request"), error["message"]
        assert f"HOTPATCH_{field.upper()}" in error["message"]
    assert served.host.instance_ids() == [], "nothing started"


@pytest.mark.parametrize(("body", "message"), WIDENING, ids=[next(iter(b)) + "-" + str(next(iter(b.values())))
                                                           for b, _ in WIDENING])
def test_widening_values_are_400_naming_the_field_and_the_setting(served: Served, body: dict[str, Any],
                                                                  message: str) -> None:
    error = error_of(served.start_rollout(body), 400)
    field = next(iter(body))
    assert error["code"] == "OverrideNotAllowed", error
    assert error["message"].startswith(f"{field}="), error["message"]
    assert message in error["message"], error["message"]
    assert served.host.instance_ids() == [], "nothing started"


def test_a_narrowing_request_runs_with_what_it_asked(served: Served) -> None:
    body = {"dry_run": True, "reboot_policy": "never", "concurrency": 2, "waves": "1,100%",
            "resource_group": "RG-MAIN", "enable_timeout": "10m", "reboot_timeout": 20, "approval_timeout": "1h",
            "run_command_timeout": "5m"}
    started = served.start_rollout(body)
    assert started.status_code == 202, started.text
    status = served.wait_for_status_url(started.json()["statusQueryGetUri"])
    assert status["runtimeStatus"] == "Completed", status
    policy = status["input"]["policy"]
    assert (policy["dry_run"], policy["reboot_policy"], policy["concurrency"], policy["guardrail"]) == (
        True, "never", 2, 0.2)  # the guardrail is the setting's
    assert (policy["waves"], policy["resource_group"]) == ("1,100%", "RG-MAIN")
    assert [policy[t] for t in ("enable_timeout", "reboot_timeout", "approval_timeout", "run_command_timeout")] == [
        "600s", "1200s", "3600s", "300s"]  # a bare number is minutes
    assert policy["exclude_tag"] == "hotpatch" and policy["subscriptions"] == [served.subscription_id]
    assert not served.twin.machine("m").license_writes, "a dry run"


def test_a_request_may_name_a_resource_group_when_the_settings_do_not(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"in-a": {"resource_group": "rg-a", "os_version": OLD},
                          "in-b": {"resource_group": "rg-b", "os_version": OLD}})
    served.set_policy(resource_group="")
    started = served.start_rollout({"resource_group": "rg-b", "waves": "100%"})
    assert started.status_code == 202, started.text
    assert served.wait_for_status_url(started.json()["statusQueryGetUri"])["runtimeStatus"] == "Completed"
    report = served.report(started.json()["id"])
    assert [row["name"] for row in report["machines"]] == ["in-b"], "only the resource group asked for"
    assert not served.twin.machine("in-a").runs


def test_a_subscription_outside_the_configured_scope_is_403(serve_fleet: ServeFleet) -> None:
    served = serve_fleet({"first": {"os_version": OLD}, "second": {"subscription": 1, "os_version": OLD}},
                         subscriptions=2)
    first, second = served.twin.subscription_ids
    served.set_policy(subscriptions=first)
    for spelled in (second, second.upper()):
        error = error_of(served.start_rollout({"dry_run": True}, subscription_id=spelled), 403)
        assert error["code"] == "SubscriptionOutOfScope" and second in error["message"], error
    unknown = "0b1f6471-1bf0-4dda-aec3-cb9272f09590"
    assert error_of(served.start_rollout(subscription_id=unknown), 403)["code"] == "SubscriptionOutOfScope"
    assert served.host.instance_ids() == [], "nothing started"
    assert served.start_rollout({"dry_run": True}, subscription_id=first).status_code == 202


# --- bounded, clean errors ------------------------------------------------------------------------------------

def hostile_bodies() -> dict[str, tuple[bytes, int, str]]:
    """name: (raw body, status, what the message says)."""
    return {
        "over_64_kb": (b'{"dry_run": true, "pad": "' + b"x" * 65536 + b'"}', 413, "at most 65536"),
        "waves_of_3_mb": (json.dumps({"waves": "1," * 1_500_000 + "100%"}).encode(), 413, "at most 65536"),
        "unknown_field_of_10_mb": (json.dumps({"x" * 10_000_000: 1}).encode(), 413, "at most 65536"),
        "nested_100k_deep": (b"[" * 100_000 + b"]" * 100_000, 413, "at most 65536"),
        "nested_60k_deep": (b"[" * 30_000 + b"]" * 30_000, 400, "nests deeper than 32 levels"),
        "nested_33_deep": (b'{"a": ' * 33 + b"1" + b"}" * 33, 400, "nests deeper than 32 levels"),
        "duplicate_key": (b'{"dry_run": true, "dry_run": false}', 400, "repeats the key 'dry_run'"),
        "nan": (b'{"concurrency": NaN}', 400, "NaN is not a JSON number"),
        "huge_integer": (b'{"concurrency": ' + b"9" * 5000 + b"}", 400, "an integer of 5000 digits; at most 18"),
        "not_utf8": (b'{"dry_run": "\xff\xfe"}', 400, "not UTF-8"),
        "string_for_boolean": (b'{"dry_run": "yes"}', 400, "expected a JSON boolean (true or false), not a JSON "
                                                            "string"),
        "float_for_count": (b'{"concurrency": 2.0}', 400, "a JSON integer"),
        "string_for_count": (b'{"concurrency": "2"}', 400, "a JSON integer"),
        "boolean_for_duration": (b'{"enable_timeout": true}', 400, "a JSON string or number"),
        "object_for_waves": (b'{"waves": {"a": 1}}', 400, "waves"),
        "long_waves_under_the_limit": (json.dumps({"waves": "1," * 30_000 + "100%"}).encode(), 400, "waves"),
        "many_waves": (json.dumps({"waves": ",".join(str(i) for i in range(1, 60))}).encode(), 400, "at most 50"),
        "long_unknown_field": (json.dumps({"y" * 60_000: 1}).encode(), 400, "invalid setting yyyyyyyy"),
    }


@pytest.mark.parametrize("name", list(hostile_bodies()))
def test_hostile_rollout_bodies_get_bounded_clean_errors(served: Served, name: str) -> None:
    body, status, message = hostile_bodies()[name]
    error = error_of(served.start_rollout(body), status)
    assert message in error["message"], error["message"]
    assert "…" in error["message"] or len(error["message"]) < 400
    assert served.host.instance_ids() == [], "nothing started"


@pytest.mark.parametrize("route", ["/api/machines/approvals", "/api/rollouts/rollout-x/approvals"])
def test_hostile_approval_bodies_get_bounded_clean_errors(served: Served, route: str) -> None:
    machine = served.twin.resource_id("m")
    cases: list[tuple[bytes, int, str]] = [
        (b'{"by": "' + b"x" * 70_000 + b'"}', 413, "at most 65536"),
        (b"[" * 60_000, 400, "nests deeper"),
        (json.dumps({"machine_id": machine}).encode()[:-1] + b', "by": "a", "by": "b"}', 400, "repeats the key 'by'"),
        (b'{"approved": "yes"}', 400, "'approved' must be a JSON boolean"),
        (b'{"by": 5}', 400, "'by' must be a JSON string"),
        (b'{"by": "' + b"z" * 5000 + b'"}', 400, "at most 256 characters"),
        (b'{"unexpected": 1}', 400, "unknown field 'unexpected'"),
    ]
    for body, status, message in cases:
        response = served.call("POST", route, data=body, headers={"Content-Type": "application/json"})
        error = error_of(response, status)
        assert message in error["message"], (body[:40], error["message"])
