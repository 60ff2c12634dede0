"""SPEC §4: every setting validates, and a bad one is one clear line naming it and the accepted values."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from core.policy import (
    SETTINGS,
    Policy,
    SettingError,
    Wave,
    apply_overrides,
    check_files,
    load_policy,
    parse_duration,
    parse_waves,
    parse_window,
)

BAD_VALUES = {
    "reboot_policy": ("sometimes", "auto | approval | window | never"),
    "workaround_mode": ("maybe", "proactive | reactive | off"),
    "dry_run": ("perhaps", "true or false"),
    "exclude_tag": ("bad/tag", "Azure tag name"),
    "concurrency": ("0", "whole number >= 1"),
    "waves": ("10%,,50%", "cumulative wave sizes"),
    "guardrail": ("150%", "fraction from 0 to 1"),
    "enable_timeout": ("soon", "positive duration"),
    "reboot_timeout": ("-5m", "positive duration"),
    "approval_timeout": ("0", "positive duration"),
    "enable_poll_interval": ("99999999999999d", "at most 365d"),
    "reboot_poll_interval": ("x", "positive duration"),
    "run_command_timeout": ("", "positive duration"),
    "run_command_attempts": ("three", "whole number >= 1"),
    "maintenance_window": ("whenever", "days and UTC hours"),
    "escalation_webhook": ("ftp://example.test/hook", "http(s) URL"),
    "schedule": ("99 99 99 99 99 Funday", "second value 99 out of range 0-59"),
    "subscriptions": ("not-a-guid", "subscription ids"),
    "resource_group": ("bad/rg", "resource group name"),
    "cloud": ("Mars", "AzureCloud | AzureUSGovernment | AzureChinaCloud"),
    "arm_endpoint": ("management.azure.com", "http(s) URL"),
    "baselines_file": ("/nonexistent/baselines.json", "cannot read"),
    "assess_patches": ("sometimes", "auto, true or false"),
    "install_schedule": ("61 * * * * *", "six-field NCRONTAB"),
    "disconnected_grace": ("later", "positive duration"),
}


def test_every_setting_has_a_bad_value_case() -> None:
    assert {s.field for s in SETTINGS} == set(BAD_VALUES)


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.field in BAD_VALUES], ids=lambda s: s.env)
def test_bad_app_setting_is_one_clear_line(spec) -> None:  # type: ignore[no-untyped-def]
    raw, accepted = BAD_VALUES[spec.field]
    if raw == "":  # an empty app setting keeps the default ...
        assert load_policy({spec.env: ""}) == Policy()
        raw = "never"  # ... so prove the error with a non-empty bad value
    with pytest.raises(SettingError) as caught:
        load_policy({spec.env: raw})
    message = str(caught.value)
    assert "\n" not in message
    assert spec.env in message, message
    assert accepted in message, message


@pytest.mark.parametrize("field", sorted(BAD_VALUES))
def test_bad_override_names_the_field(field: str) -> None:
    with pytest.raises(SettingError) as caught:
        check_files(apply_overrides(Policy(), {field: BAD_VALUES[field][0]}))  # files: checked, not parsed
    assert str(caught.value).startswith(f"invalid setting {field}=")


def test_policy_json_is_read_without_touching_files() -> None:
    """Orchestrators rebuild the policy in every replay: reading it must not read the baselines file."""
    policy = Policy(baselines_file="/nonexistent/baselines.json")
    assert Policy.from_json(policy.to_json()) == policy


def test_unknown_override_is_rejected_with_the_known_names() -> None:
    with pytest.raises(SettingError, match=r"a known setting .*reboot_policy"):
        apply_overrides(Policy(), {"reboot_polcy": "auto"})


def test_defaults_are_safe() -> None:
    policy = load_policy({})
    assert policy.reboot_policy == "approval"
    assert policy.dry_run is False
    assert policy.workaround_mode == "proactive"
    assert policy.resolved_arm_endpoint == "https://management.azure.com"


def test_environment_values_parse() -> None:
    policy = load_policy({
        "HOTPATCH_REBOOT_POLICY": "AUTO", "HOTPATCH_DRY_RUN": "true", "HOTPATCH_CONCURRENCY": "7",
        "HOTPATCH_WAVES": "2, 25%, 100%", "HOTPATCH_GUARDRAIL": "30%", "HOTPATCH_ENABLE_TIMEOUT": "45",
        "HOTPATCH_REBOOT_TIMEOUT": "1h", "HOTPATCH_SUBSCRIPTIONS": "11111111-1111-1111-1111-111111111111",
        "HOTPATCH_CLOUD": "azureusgovernment", "HOTPATCH_MAINTENANCE_WINDOW": "Fri-Mon 22:00-02:00",
    })
    assert policy.reboot_policy == "auto" and policy.dry_run is True and policy.concurrency == 7
    assert policy.waves == (Wave(count=2), Wave(percent=25.0), Wave(percent=100.0))
    assert policy.guardrail == pytest.approx(0.3)
    assert policy.enable_timeout == 45 * 60 and policy.reboot_timeout == 3600
    assert policy.subscriptions == ("11111111-1111-1111-1111-111111111111",)
    assert policy.resolved_arm_endpoint == "https://management.usgovcloudapi.net"
    assert policy.maintenance_window.days == (0, 4, 5, 6)
    assert (policy.maintenance_window.start_minute, policy.maintenance_window.end_minute) == (22 * 60, 120)


def test_policy_round_trips_through_json() -> None:
    policy = load_policy({"HOTPATCH_WAVES": "1,50%", "HOTPATCH_MAINTENANCE_WINDOW": "Sat 01:30-04:00"})
    assert Policy.from_json(policy.to_json()) == policy


def test_parsers() -> None:
    assert parse_duration("90s") == 90 and parse_duration("2h") == 7200 and parse_duration(5) == 300
    assert [w.cumulative_size(200) for w in parse_waves("1,10%,100%")] == [1, 20, 200]
    assert parse_waves("5,3%")[1].cumulative_size(10) == 1
    assert str(parse_window("sat,sun 02:00-06:00")) == "Sat,Sun 02:00-06:00"


# --- requests narrow, settings define the maximum ------------------------------------------------------------

from core.policy import REQUEST_FIELDS, SETTINGS_BY_FIELD, NarrowingError, narrow  # noqa: E402

STRICT = Policy(reboot_policy="approval", dry_run=False, concurrency=5, guardrail=0.2, resource_group="rg-main")


@pytest.mark.parametrize(
    ("overrides", "check"),
    [
        ({"dry_run": True}, lambda p: p.dry_run is True),
        ({"dry_run": False}, lambda p: p.dry_run is False),
        ({"reboot_policy": "never"}, lambda p: p.reboot_policy == "never"),
        ({"reboot_policy": "APPROVAL"}, lambda p: p.reboot_policy == "approval"),
        ({"concurrency": 5}, lambda p: p.concurrency == 5),
        ({"concurrency": 1}, lambda p: p.concurrency == 1),
        ({"waves": "100%"}, lambda p: len(p.waves) == 1),
        ({"waves": ["1", 5, "100%"]}, lambda p: len(p.waves) == 3),
        ({"resource_group": "RG-Main"}, lambda p: p.resource_group == "RG-Main"),
        ({"enable_timeout": "30m", "reboot_timeout": 10, "approval_timeout": "1h", "run_command_timeout": "90s"},
         lambda p: (p.enable_timeout, p.reboot_timeout, p.approval_timeout, p.run_command_timeout) == (
             1800, 600, 3600, 90)),
    ],
)
def test_a_request_may_narrow(overrides: dict, check) -> None:  # type: ignore[no-untyped-def]
    narrowed = narrow(STRICT, overrides)
    assert check(narrowed)
    untouched = {f for f in SETTINGS_BY_FIELD if f not in overrides}
    assert all(getattr(narrowed, f) == getattr(STRICT, f) for f in untouched)


@pytest.mark.parametrize(
    ("base", "overrides", "message"),
    [
        (STRICT, {"reboot_policy": "auto"}, "reboot_policy='auto' is not allowed in a request: HOTPATCH_REBOOT_POLICY"),
        (STRICT, {"reboot_policy": "window"}, "auto < window < approval < never"),
        (Policy(reboot_policy="never"), {"reboot_policy": "approval"}, "is 'never'"),
        (Policy(dry_run=True), {"dry_run": False}, "HOTPATCH_DRY_RUN makes every run a dry run"),
        (STRICT, {"concurrency": 6}, "HOTPATCH_CONCURRENCY allows at most 5"),
        (STRICT, {"enable_timeout": "31m"}, "HOTPATCH_ENABLE_TIMEOUT allows at most 1800s"),
        (STRICT, {"approval_timeout": "25h"}, "HOTPATCH_APPROVAL_TIMEOUT"),
        (STRICT, {"run_command_timeout": 11}, "HOTPATCH_RUN_COMMAND_TIMEOUT"),
        (STRICT, {"reboot_timeout": "1h"}, "HOTPATCH_REBOOT_TIMEOUT"),
        (STRICT, {"resource_group": "rg-other"}, "limits the scope to resource group 'rg-main'"),
    ],
)
def test_a_request_may_not_widen(base: Policy, overrides: dict, message: str) -> None:
    with pytest.raises(NarrowingError) as caught:
        narrow(base, overrides)
    assert str(caught.value).startswith(f"{next(iter(overrides))}=")
    assert message in str(caught.value)


def test_every_other_setting_is_fixed_by_the_app_settings() -> None:
    fixed = [s for s in SETTINGS if s.field not in REQUEST_FIELDS]
    assert {s.field for s in fixed} == {
        "workaround_mode", "exclude_tag", "enable_poll_interval", "reboot_poll_interval", "run_command_attempts",
        "maintenance_window", "escalation_webhook", "schedule", "subscriptions", "cloud", "arm_endpoint",
        "baselines_file", "disconnected_grace", "assess_patches", "install_schedule",
        "guardrail"}  # SPEC §6 does not list it among what a request may set, even a stricter one
    for spec in fixed:
        with pytest.raises(NarrowingError, match=f"^{spec.field} cannot be set in a request: .*{spec.env}"):
            narrow(Policy(), {spec.field: "x"})


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"dry_run": "yes"}, "dry_run='yes': expected a JSON boolean (true or false), not a JSON string"),
        ({"dry_run": 1}, "a JSON boolean"),
        ({"concurrency": 2.0}, "a JSON integer"),
        ({"concurrency": "2"}, "a JSON integer"),
        ({"concurrency": True}, "a JSON integer"),
        ({"reboot_policy": ["never"]}, "a JSON string"),
        ({"enable_timeout": True}, "a JSON string or number"),
        ({"reboot_timeout": None}, "a JSON string or number, not a JSON null"),
        ({"waves": {"1": 1}}, "waves"),
        ({"waves": [1.5]}, "waves"),
        ({"waves": "1," * 60 + "100%"}, "at most 50 waves"),
        ({"resource_group": "r" * 2000}, "at most 1024 characters"),
        ({"rebootPolicy": "never"}, "a field a request may set"),
    ],
)
def test_request_values_have_json_types(overrides: dict, message: str) -> None:
    with pytest.raises(SettingError) as caught:
        narrow(Policy(), overrides)
    assert not isinstance(caught.value, NarrowingError)
    assert message in str(caught.value)


def test_errors_quote_a_short_prefix_of_a_bad_value() -> None:
    with pytest.raises(SettingError) as caught:
        narrow(Policy(), {"waves": "x" * 10_000_000})
    assert len(str(caught.value)) < 400 and "…" in str(caught.value)
    with pytest.raises(SettingError) as caught:
        narrow(Policy(), {"k" * 10_000: 1})
    assert len(str(caught.value)) < 600


def test_the_webhook_is_no_part_of_the_policy_json() -> None:
    secret = "https://hooks.example.test/x?sig=S3CR3T"
    policy = Policy(escalation_webhook=secret)
    assert policy.to_json()["escalation_webhook"] == "" and "S3CR3T" not in str(policy.to_json())
    assert Policy.from_json({**policy.to_json(), "escalation_webhook": secret}).escalation_webhook == ""
    data = policy.to_json()
    del data["escalation_webhook"]
    assert Policy.from_json(data) == Policy()
    assert Policy.from_json(policy).escalation_webhook == ""


def test_the_webhook_setting_is_read_and_its_value_never_quoted() -> None:
    from core.policy import escalation_webhook_setting

    assert escalation_webhook_setting({}) == ""
    assert escalation_webhook_setting({"HOTPATCH_ESCALATION_WEBHOOK": "https://h.test/a?sig=1"}) == (
        "https://h.test/a?sig=1")
    with pytest.raises(SettingError) as caught:
        escalation_webhook_setting({"HOTPATCH_ESCALATION_WEBHOOK": "ftp://h.test/?sig=S3CR3T"})
    assert "S3CR3T" not in str(caught.value) and "HOTPATCH_ESCALATION_WEBHOOK" in str(caught.value)
    with pytest.raises(SettingError) as caught:
        load_policy({"HOTPATCH_ESCALATION_WEBHOOK": "ftp://h.test/?sig=S3CR3T"})
    assert "S3CR3T" not in str(caught.value)


@pytest.mark.parametrize(
    ("setting", "dry_run", "assesses"),
    [("auto", True, True), ("auto", False, False), ("true", False, True), ("false", True, False),
     ("on", False, True), ("off", True, False)],
)
def test_assess_patches_is_on_for_dry_runs_and_off_for_rollouts_unless_set(setting: str, dry_run: bool,
                                                                         assesses: bool) -> None:
    policy = load_policy({"HOTPATCH_ASSESS_PATCHES": setting, "HOTPATCH_DRY_RUN": str(dry_run).lower()})
    assert policy.assesses_patches is assesses
    assert Policy().assess_patches == "auto" and not Policy().assesses_patches


@pytest.mark.parametrize(
    ("schedule", "problem"),
    [("0 0 3 * *", "must have 6 fields (second minute hour day month day-of-week), got 5"),
     ("0 0 25 * * *", "hour value 25 out of range 0-23"), ("0 0 3 * 13 *", "month value 13 out of range 1-12"),
     ("0 */0 * * * *", "invalid step '0' in minute"), ("0 0 3 * * Funday", "invalid day-of-week value 'Funday'"),
     ("0 0 3 * * " + "Sun," * 60 + "Mon", "at most 200 characters")],
)
def test_schedules_are_checked_field_by_field(schedule: str, problem: str) -> None:
    with pytest.raises(SettingError, match=re.escape(problem)):
        load_policy({"HOTPATCH_SCHEDULE": schedule})
    for good in ("0 0 3 * * Sun", "0 */5 * * * *", "0 30 9 1-7 Jan,Apr,Jul,Oct Tue", "0 0 0 * * 0-6/2"):
        assert load_policy({"HOTPATCH_SCHEDULE": good}).schedule == good


def test_durations_are_at_most_a_year() -> None:
    assert parse_duration("365d") == 365 * 86400
    for too_long in ("366d", "99999999999999999999999", 1e30):
        with pytest.raises(ValueError, match="at most 365d"):
            parse_duration(too_long)


def test_a_baselines_file_that_is_not_utf8_is_named(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "baselines.json"
    bad.write_bytes(b'\xff\xfe{"baselines": []}')
    with pytest.raises(SettingError, match=r"HOTPATCH_BASELINES_FILE.*cannot read baselines"):
        load_policy({"HOTPATCH_BASELINES_FILE": str(bad)})


def test_misspelt_settings_are_found_and_every_hotpatch_name_the_code_reads_is_known() -> None:
    from core.policy import OTHER_SETTINGS, unknown_settings

    assert unknown_settings({"HOTPATCH_CONCURENCY": "5", "HOTPATCH_CONCURRENCY": "5", "PATH": "/bin",
                             "HOTPATCH_TASK_HUB": "hub"}) == ["HOTPATCH_CONCURENCY"]
    root = Path(__file__).resolve().parents[2]
    read = set()
    for folder in ("core", "orchestrators", "activities", "kit/arc_hotpatch"):
        for source in (root / folder).rglob("*.py"):
            read |= set(re.findall(r"[\"'](HOTPATCH_[A-Z][A-Z_]*[A-Z])[\"']", source.read_text("utf-8")))
    assert read and read - ({spec.env for spec in SETTINGS} | OTHER_SETTINGS) == set()
