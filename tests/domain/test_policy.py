"""SPEC §4: every setting validates, and a bad one is one clear line naming it and the accepted values."""

from __future__ import annotations

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
    "enable_poll_interval": ("2 weeks", "positive duration"),
    "reboot_poll_interval": ("x", "positive duration"),
    "run_command_timeout": ("", "positive duration"),
    "run_command_attempts": ("three", "whole number >= 1"),
    "maintenance_window": ("whenever", "days and UTC hours"),
    "escalation_webhook": ("ftp://example.test/hook", "http(s) URL"),
    "schedule": ("every sunday", "six-field NCRONTAB"),
    "subscriptions": ("not-a-guid", "subscription ids"),
    "resource_group": ("bad/rg", "resource group name"),
    "cloud": ("Mars", "AzureCloud | AzureUSGovernment | AzureChinaCloud"),
    "arm_endpoint": ("management.azure.com", "http(s) URL"),
    "baselines_file": ("/nonexistent/baselines.json", "cannot read"),
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
