"""The CLI mirror of the policy settings: ``--reboot-policy auto`` etc., generated from ``SETTINGS``.

One table (core.policy.SETTINGS) defines every setting, so the
app settings, the HTTP overrides and these flags can never drift apart.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

from core.policy import SETTINGS, SETTINGS_BY_FIELD, Policy, SettingError, apply_overrides, check_files, quote_value

_BY_FLAG = {spec.flag: spec for spec in SETTINGS}
_BOOLEAN = {"dry_run"}


class UnexpectedArgument(SettingError):
    """A word where a flag belongs (``--dry-run maybe``): named as an argument, not as an unknown setting."""

    def __init__(self, argument: str, after: str | None) -> None:
        why = (f"{after} takes no value (give {after} or --no-{after[2:]}, or {after}=true|false)" if after
               else "expected a flag such as --reboot-policy")
        ValueError.__init__(self, f"unexpected argument {quote_value(argument)}: {why}")
        self.setting, self.value, self.accepted = after or argument, argument, why


def parse_policy_flags(args: Sequence[str]) -> dict[str, Any]:
    """``["--reboot-policy", "auto", "--dry-run"]`` → ``{"reboot_policy": "auto", "dry_run": True}``.

    Raises SettingError naming an unknown flag, or a flag without its value; UnexpectedArgument for a word that is
    no flag (after a boolean flag, which takes no value: ``--dry-run maybe``).
    """
    overrides: dict[str, Any] = {}
    items = list(args)
    index = 0
    bare: str | None = None  # the boolean flag just given without a value: a word after it is not its value
    while index < len(items):
        item = items[index]
        if not item.startswith("-"):
            raise UnexpectedArgument(item, bare)
        bare = None
        flag, _, inline = item.partition("=")
        if flag.startswith("--no-") and "--" + flag[5:] in _BY_FLAG and _BY_FLAG["--" + flag[5:]].field in _BOOLEAN:
            overrides[_BY_FLAG["--" + flag[5:]].field] = False
            bare, index = "--" + flag[5:], index + 1
            continue
        spec = _BY_FLAG.get(flag)
        if spec is None:
            raise SettingError(item, "", "a known flag (" + ", ".join(sorted(_BY_FLAG)) + ")")
        if spec.field in _BOOLEAN and not inline:
            overrides[spec.field] = True
            bare, index = spec.flag, index + 1
            continue
        if inline or "=" in item:
            value = inline
            index += 1
        else:
            if index + 1 >= len(items):
                raise SettingError(flag, "", "a value after the flag")
            value = items[index + 1]
            index += 2
        overrides[spec.field] = value
    return overrides


def policy_from_flags(base: Policy, args: Sequence[str]) -> Policy:
    """Apply CLI policy flags on ``base``; errors name the flag (``--reboot-policy``), not the field."""
    overrides = parse_policy_flags(args)
    try:
        return check_files(apply_overrides(base, overrides), "--baselines-file")
    except SettingError as exc:
        spec = next((s for s in SETTINGS if s.field == exc.setting), None)
        if spec is None:
            raise
        raise SettingError(spec.flag, exc.value, exc.accepted) from None


def policy_from_environment(
    base: Policy, environ: Mapping[str, str], *, ignore: Collection[str] = ()
) -> Policy:
    """``base`` with the app settings (``HOTPATCH_*``) found in ``environ`` applied, as ``load_policy`` reads
    them (an empty or absent setting keeps ``base``'s value); ``ignore``: fields the caller decides itself
    (the twin decides the ARM endpoint). Errors name the setting (``HOTPATCH_REBOOT_POLICY``)."""
    overrides: dict[str, Any] = {}
    for spec in SETTINGS:
        raw = environ.get(spec.env)
        if spec.field in ignore or raw is None:
            continue
        if raw.strip() == "" and spec.field not in ("escalation_webhook", "subscriptions"):
            continue
        overrides[spec.field] = raw
    policy = base
    for field_name, raw in overrides.items():
        try:
            policy = apply_overrides(policy, {field_name: raw})
        except SettingError as exc:
            raise SettingError(SETTINGS_BY_FIELD[field_name].env, exc.value, exc.accepted) from None
    return check_files(policy, SETTINGS_BY_FIELD["baselines_file"].env)


def policy_flags_help(base: Policy | None = None, without: tuple[str, ...] = ()) -> str:
    """The flags' help with ``base``'s values as defaults, for the commands' epilog; ``without``: fields whose flag
    the command uses for something else (``--subscriptions K``: the simulated fleet's count)."""
    lines = ["Policy flags (same names as the HOTPATCH_* app settings; a bad value is named with what is accepted):"]
    defaults = (base or Policy()).to_json()
    for spec in SETTINGS:
        if spec.field in without:
            continue
        value = "" if spec.field in _BOOLEAN else " VALUE"
        default = defaults[spec.field]
        shown = ",".join(default) if isinstance(default, list) else str(default).lower() if isinstance(
            default, bool) else str(default)
        lines.append(f"  {spec.flag}{value}: {spec.help} (default: {shown or 'none'})")
    return "\n".join(lines)
