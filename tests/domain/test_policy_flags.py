"""CLI policy flags mirror the app settings: same names in kebab case, same validation, errors name the flag."""

from __future__ import annotations

import pytest

from arc_hotpatch.policy_flags import parse_policy_flags, policy_flags_help, policy_from_flags
from core.policy import SETTINGS, Policy, SettingError


def test_flags_parse_in_every_form() -> None:
    assert parse_policy_flags(["--reboot-policy", "never", "--dry-run", "--waves=1,100%", "--no-dry-run"]) == {
        "reboot_policy": "never", "dry_run": False, "waves": "1,100%"}
    policy = policy_from_flags(Policy(), ["--guardrail", "10%", "--enable-timeout", "45m", "--dry-run"])
    assert (policy.guardrail, policy.enable_timeout, policy.dry_run) == (0.1, 2700, True)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--reboot-policy", "sometimes"], "--reboot-policy"),
        (["--concurrency"], "--concurrency"),
        (["--no-such-flag", "1"], "--no-such-flag"),
        (["--escalation-webhook", "ftp://x"], "--escalation-webhook"),
    ],
)
def test_bad_flags_are_named(args: list[str], named: str) -> None:
    with pytest.raises(SettingError) as caught:
        policy_from_flags(Policy(), args)
    assert named in str(caught.value)


def test_every_setting_has_a_flag_in_the_help() -> None:
    text = policy_flags_help()
    for spec in SETTINGS:
        assert spec.flag in text
    assert "(default: approval)" in text and "(default: auto)" in policy_flags_help(Policy(reboot_policy="auto"))


def test_simulate_and_serve_do_not_list_the_policy_flag_their_fleet_count_takes() -> None:
    from typer.testing import CliRunner

    from arc_hotpatch.cli import app

    for command, listed in (("simulate", False), ("serve", False), ("plan", True)):
        shown = CliRunner().invoke(app, [command, "--help"], terminal_width=200).output
        assert ("--subscriptions VALUE: subscriptions to roll out to" in shown) is listed, command
    assert "--subscriptions VALUE" not in policy_flags_help(without=("subscriptions",))
