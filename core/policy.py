"""Policy settings (SPEC §4): one table drives app settings, CLI flags and HTTP overrides.

Every setting has a field name (HTTP body key, snake case), an app setting
(environment variable, ``HOTPATCH_`` + upper case) and a CLI flag (kebab case).
Values are validated here, once; an invalid one raises ``SettingError`` naming
the setting and the accepted values, so nothing starts half-configured.

**Requests narrow, settings define the maximum** (SPEC §6, ``narrow``). The app settings are
the most a run may do; the body of an HTTP rollout start may only make a run do less:

=======================  ==================================================================
field                    a request may set it to
=======================  ==================================================================
``dry_run``              ``true`` (or the setting's own value): false -> true only
``reboot_policy``        the setting's or a stricter one: auto < window < approval < never
``concurrency``          a JSON integer from 1 up to the setting's value
``waves``                any valid cumulative plan (waves order the machines in scope,
                         they never add one; the guardrail still judges every wave)
``guardrail``            a threshold up to the setting's (smaller halts sooner)
``resource_group``       the setting's value when it names one (case-insensitive), any
                         valid name when it is empty (a part of the scope)
``enable_timeout``,      a duration up to the setting's (escalate to a human sooner)
``reboot_timeout``,
``approval_timeout``,
``run_command_timeout``
=======================  ==================================================================

Everything else is fixed by the app settings and is a ``NarrowingError`` naming the field:
the scope (``subscriptions``: the path names the subscription, ``exclude_tag``), where the
app talks to (``escalation_webhook``, ``cloud``, ``arm_endpoint``), what it reads
(``baselines_file``, ``assess_patches``), when it runs (``schedule``, ``install_schedule``,
``maintenance_window``: a different window is not a narrower one), and how it works rather than how
much it does (``workaround_mode``:
``reactive`` may mean a later, second reboot; the poll intervals, which set the ARM load;
``run_command_attempts``; ``disconnected_grace``, which decides whether a flapping agent is
skipped). A widening value is a ``NarrowingError`` too, naming the field,
the value and the setting's.

**Secrets** (``SECRET_FIELDS``: the escalation webhook URL, which may carry a signature in
its query string) never travel in orchestration inputs, outputs or custom status:
``Policy.to_json`` writes them empty and ``Policy.from_json`` ignores them. The activity that
needs one reads its app setting at call time (``escalation_webhook_setting``).
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from typing import Any
from urllib.parse import urlparse

from .ncrontab import CronSchedule, ScheduleError
from .vocabulary import RebootPolicy, WorkaroundMode

ENV_PREFIX = "HOTPATCH_"

CLOUD_ARM_ENDPOINTS = {
    "AzureCloud": "https://management.azure.com",
    "AzureUSGovernment": "https://management.usgovcloudapi.net",
    "AzureChinaCloud": "https://management.chinacloudapi.cn",
}

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*$", re.IGNORECASE)
_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "": 60}
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_WINDOW = re.compile(r"^\s*([A-Za-z,\-]+)\s+(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


QUOTE_LIMIT = 60  # characters of a bad value (or name) an error message quotes


def quote_value(value: Any, limit: int = QUOTE_LIMIT) -> str:
    """``repr(value)``, cut to a short prefix + '…' so an error never echoes a huge value."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


def _short(text: str, limit: int = QUOTE_LIMIT) -> str:
    text = str(text)
    return text if len(text) <= limit else text[:limit] + "…"


class SettingError(ValueError):
    """An invalid setting; ``str()`` is one line naming the setting and what is accepted.

    The value is quoted as a short prefix (``quote_value``): an error never echoes a huge value."""

    def __init__(self, setting: str, value: Any, accepted: str) -> None:
        self.setting, self.value, self.accepted = setting, value, accepted
        super().__init__(f"invalid setting {_short(setting)}={quote_value(value)}: expected {accepted}")


class NarrowingError(SettingError):
    """A request that would widen what the app settings allow (or set what only they may set); names the field."""

    def __init__(self, setting: str, value: Any, reason: str, *, fixed: bool = False) -> None:
        what = f"{_short(setting)} cannot be set" if fixed else f"{_short(setting)}={quote_value(value)} is not allowed"
        ValueError.__init__(self, f"{what} in a request: {reason}")
        self.setting, self.value, self.accepted, self.fixed = setting, value, reason, fixed


@dataclass(frozen=True)
class MaintenanceWindow:
    """Weekly window in UTC: days (0 = Monday) and [start, end) minutes of the day."""

    days: tuple[int, ...]
    start_minute: int
    end_minute: int

    def __str__(self) -> str:
        days = ",".join(_DAYS[d].capitalize() for d in self.days)
        return (
            f"{days} {self.start_minute // 60:02d}:{self.start_minute % 60:02d}-"
            f"{self.end_minute // 60:02d}:{self.end_minute % 60:02d}"
        )


@dataclass(frozen=True)
class Wave:
    """A cumulative rollout ring: up to ``count`` machines, or ``percent`` of the fleet."""

    count: int | None = None
    percent: float | None = None

    def __str__(self) -> str:
        return f"{self.count}" if self.count is not None else f"{self.percent:g}%"

    def cumulative_size(self, fleet: int) -> int:
        if self.count is not None:
            return min(self.count, fleet)
        import math

        return min(fleet, max(1, math.ceil(fleet * (self.percent or 0) / 100)))


# --- value parsers: (raw) -> value, raising ValueError with the accepted values ----------


def _bool(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("true or false")


def _auto_or_bool(raw: Any) -> str:
    """``auto`` (the default: decided by the run), or a boolean as ``on`` / ``off``."""
    if str(raw).strip().lower() == "auto":
        return "auto"
    try:
        return "on" if _bool(raw) else "off"
    except ValueError:
        raise ValueError("auto, true or false") from None


def _enum(enum_type: type) -> Callable[[Any], str]:
    accepted = " | ".join(m.value for m in enum_type)

    def parse(raw: Any) -> str:
        text = str(raw).strip().lower()
        try:
            return enum_type(text).value
        except ValueError:
            raise ValueError(f"one of {accepted}") from None

    parse.accepted = f"one of {accepted}"  # type: ignore[attr-defined]
    return parse


def _positive_int(raw: Any) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ValueError("a whole number >= 1") from None
    if value < 1 or isinstance(raw, bool):
        raise ValueError("a whole number >= 1")
    return value


MAX_DURATION_S = 365 * 86400  # a year: longer is a typo (and would not survive the policy's JSON round trip)


def parse_duration(raw: Any) -> float:
    """``90s``, ``30m``, ``2h``, ``1d``; a bare number means minutes. Returns seconds."""
    if isinstance(raw, (int, float)) and not isinstance(raw, bool):
        raw = str(raw)
    match = _DURATION.match(str(raw)[:64])
    seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2).lower()] if match else 0.0
    if not 0 < seconds <= MAX_DURATION_S:
        raise ValueError("a positive duration of at most 365d such as 90s, 30m, 2h or 1d (a bare number is "
                         "minutes)")
    return seconds


def _fraction(raw: Any) -> float:
    text = str(raw).strip()
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError("a fraction from 0 to 1 or a percentage such as 20%") from None
    if not 0 <= value <= 1:
        raise ValueError("a fraction from 0 to 1 or a percentage such as 20%")
    return value


MAX_WAVES = 50


def parse_waves(raw: Any) -> tuple[Wave, ...]:
    """Comma list of cumulative ring sizes, counts or percentages: ``1,10%,100%`` (at most ``MAX_WAVES``)."""
    items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
    waves: list[Wave] = []
    problem = "comma-separated cumulative wave sizes, counts or percentages such as 1,10%,100%"
    if len(items) > MAX_WAVES:
        raise ValueError(f"{problem} (at most {MAX_WAVES} waves)")
    for item in items:
        text = str(item).strip()
        if not text:
            raise ValueError(problem)
        try:
            if text.endswith("%"):
                percent = float(text[:-1])
                if not 0 < percent <= 100:
                    raise ValueError
                waves.append(Wave(percent=percent))
            else:
                count = int(text)
                if count < 1:
                    raise ValueError
                waves.append(Wave(count=count))
        except ValueError:
            raise ValueError(problem) from None
    if not waves:
        raise ValueError(problem)
    _check_cumulative(waves, problem)
    return tuple(waves)


def _check_cumulative(waves: list[Wave], problem: str) -> None:
    """Each size covers the ones before it: counts first, then percentages, each list not decreasing."""
    seen_percent = False
    for previous, wave in zip([None, *waves], waves, strict=False):
        if wave.percent is not None:
            seen_percent = True
        elif seen_percent:
            raise ValueError(f"{problem} (cumulative: a count cannot follow a percentage, {wave} after {previous})")
        if previous is not None and (previous.count or 0) > (wave.count or 0) and wave.percent is None:
            raise ValueError(f"{problem} (cumulative: {wave} is smaller than {previous} before it)")
        if previous is not None and previous.percent is not None and wave.percent is not None \
                and previous.percent > wave.percent:
            raise ValueError(f"{problem} (cumulative: {wave} is smaller than {previous} before it)")


def parse_window(raw: Any) -> MaintenanceWindow:
    """``Sat,Sun 02:00-06:00`` (UTC); days may be a range ``Mon-Fri``; end may pass midnight."""
    problem = "days and UTC hours such as 'Sat,Sun 02:00-06:00' or 'Mon-Fri 22:00-02:00'"
    match = _WINDOW.match(str(raw))
    if not match:
        raise ValueError(problem)
    days: list[int] = []
    for part in match.group(1).lower().split(","):
        bounds = part.split("-")
        if any(b[:3] not in _DAYS for b in bounds) or len(bounds) > 2:
            raise ValueError(problem)
        first, last = _DAYS.index(bounds[0][:3]), _DAYS.index(bounds[-1][:3])
        span = range(first, last + 1) if first <= last else [*range(first, 7), *range(0, last + 1)]
        days.extend(d for d in span if d not in days)
    sh, sm, eh, em = (int(match.group(i)) for i in range(2, 6))
    if sh > 23 or eh > 24 or sm > 59 or em > 59 or (sh * 60 + sm) == (eh * 60 + em):
        raise ValueError(problem)
    return MaintenanceWindow(tuple(sorted(days)), sh * 60 + sm, eh * 60 + em)


def parse_subscription_id(raw: Any) -> str:
    try:
        return str(uuid.UUID(str(raw).strip()))
    except ValueError:
        raise ValueError("a subscription id (GUID such as 00000000-0000-0000-0000-000000000000)") from None


def _subscriptions(raw: Any) -> tuple[str, ...]:
    items = raw if isinstance(raw, (list, tuple)) else [s for s in str(raw).split(",") if s.strip()]
    try:
        return tuple(parse_subscription_id(s) for s in items)
    except ValueError:
        raise ValueError("a comma-separated list of subscription ids (GUIDs), or empty for all") from None


def _url(raw: Any) -> str:
    text = str(raw).strip()
    if not text:
        return ""
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("an http(s) URL, or empty")
    return text


def _arm_endpoint(raw: Any) -> str:
    try:
        return _url(raw).rstrip("/")
    except ValueError:
        raise ValueError("an http(s) URL such as https://management.azure.com, or empty for the cloud's") from None


def _cloud(raw: Any) -> str:
    text = str(raw).strip()
    for name in CLOUD_ARM_ENDPOINTS:
        if name.lower() == text.lower():
            return name
    raise ValueError("one of " + " | ".join(CLOUD_ARM_ENDPOINTS))


_TAG_NAME_FORBIDDEN = set('<>%&\\?/')


def _tag_name(raw: Any) -> str:
    text = str(raw).strip()
    if not text or len(text) > 512 or _TAG_NAME_FORBIDDEN & set(text):
        raise ValueError("a non-empty Azure tag name (no < > % & \\ ? /)")
    return text


MAX_SCHEDULE_CHARS = 200


def _ncrontab(raw: Any) -> str:
    """Six NCRONTAB fields (second minute hour day month weekday), as the timer trigger wants: parsed as the local
    host parses its timers' schedules (the Functions host refuses to start a timer whose schedule it cannot parse)."""
    text = " ".join(str(raw).split())
    if len(text) > MAX_SCHEDULE_CHARS:  # the parser's messages quote the whole expression
        raise ValueError(f"a six-field NCRONTAB expression such as '0 0 3 * * Sun' (at most {MAX_SCHEDULE_CHARS} "
                         "characters)")
    try:
        CronSchedule.parse(text)
    except ScheduleError as exc:
        raise ValueError(f"a six-field NCRONTAB expression such as '0 0 3 * * Sun' ({exc})") from None
    return text


def _ncrontab_or_off(raw: Any) -> str:
    """A six-field NCRONTAB schedule, or empty (off)."""
    if not str(raw).strip():
        return ""
    try:
        return _ncrontab(raw)
    except ValueError:
        raise ValueError("a six-field NCRONTAB expression such as '0 0 4 * * Wed', or empty (off)") from None


def _baselines_file(raw: Any) -> str:
    """A path (read by activities; ``load_policy`` checks it once at start so a typo fails early)."""
    return str(raw).strip()


_RG = re.compile(r"^[-\w._()]{1,90}$")


def _resource_group(raw: Any) -> str:
    text = str(raw).strip()
    if text and (not _RG.match(text) or text.endswith(".")):
        raise ValueError("a resource group name (1-90 letters, digits, - _ . ( )), or empty")
    return text


@dataclass(frozen=True)
class Policy:
    """Validated policy. Durations are seconds. Defaults are the safe ones."""

    reboot_policy: str = RebootPolicy.APPROVAL.value
    workaround_mode: str = WorkaroundMode.PROACTIVE.value
    dry_run: bool = False
    exclude_tag: str = "hotpatch"
    concurrency: int = 20
    waves: tuple[Wave, ...] = (Wave(count=1), Wave(percent=10.0), Wave(percent=100.0))
    guardrail: float = 0.2
    enable_timeout: float = 30 * 60
    reboot_timeout: float = 30 * 60
    approval_timeout: float = 24 * 3600
    enable_poll_interval: float = 2 * 60
    reboot_poll_interval: float = 60
    run_command_timeout: float = 10 * 60
    run_command_attempts: int = 3
    disconnected_grace: float = 10 * 60
    maintenance_window: MaintenanceWindow = field(default_factory=lambda: parse_window("Sun 02:00-06:00"))
    escalation_webhook: str = ""
    schedule: str = "0 0 3 * * Sun"
    subscriptions: tuple[str, ...] = ()
    resource_group: str = ""
    cloud: str = "AzureCloud"
    arm_endpoint: str = ""
    baselines_file: str = ""
    assess_patches: str = "auto"
    install_schedule: str = ""  # NCRONTAB of the whole fleet's hotpatch installation; empty: off

    @property
    def resolved_arm_endpoint(self) -> str:
        return self.arm_endpoint or CLOUD_ARM_ENDPOINTS[self.cloud]

    @property
    def assesses_patches(self) -> bool:
        """Run Update Manager's patch assessment for the forecast: ``auto`` in dry runs (``plan`` included) only;
        a rollout keeps within the ARM budget unless the setting says ``true``."""
        return self.assess_patches == "on" or (self.assess_patches == "auto" and self.dry_run)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe form, the orchestrations' input (round-trips through ``from_json``, secrets aside).

        Secrets (``SECRET_FIELDS``) are written empty: an orchestration's input is kept in its
        history and shown by the durable status API. Who needs one reads its app setting."""
        data = asdict(self)
        for secret in SECRET_FIELDS:
            data[secret] = ""
        data["waves"] = ",".join(str(w) for w in self.waves)
        data["maintenance_window"] = str(self.maintenance_window)
        data["subscriptions"] = list(self.subscriptions)
        for spec in SETTINGS:
            if spec.parse is parse_duration:  # seconds, explicit (a bare number would mean minutes)
                data[spec.field] = f"{data[spec.field]:g}s"
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Policy:
        """The inverse of ``to_json``. Pure (no file or environment reads): orchestrators call it in replay,
        for every machine of a rollout with the same policy, so the parsed (immutable) policy is shared."""
        if isinstance(data, Policy):
            return replace(data, **{secret: "" for secret in SECRET_FIELDS}) if _has_secret(data) else data
        data = {k: v for k, v in data.items() if k not in SECRET_FIELDS}  # absent or ignored: never carried
        try:
            key = tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in data.items())
            return _policy_from_items(key)
        except TypeError:  # an unhashable value: parse it once
            return apply_overrides(cls(), data)

    def with_overrides(self, overrides: Mapping[str, Any]) -> Policy:
        return apply_overrides(self, overrides)


@dataclass(frozen=True)
class SettingSpec:
    field: str
    parse: Callable[[Any], Any]
    help: str

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.field.upper()

    @property
    def flag(self) -> str:
        return "--" + self.field.replace("_", "-")


SETTINGS: tuple[SettingSpec, ...] = (
    SettingSpec("reboot_policy", _enum(RebootPolicy), "when a machine may be rebooted"),
    SettingSpec("workaround_mode", _enum(WorkaroundMode), "October 2025 licensing workaround"),
    SettingSpec("dry_run", _bool, "check and plan only; change nothing"),
    SettingSpec("exclude_tag", _tag_name, "tag name whose value 'exclude' skips a machine"),
    SettingSpec("concurrency", _positive_int, "machines worked on at once per subscription"),
    SettingSpec("waves", parse_waves, "cumulative rollout rings, canary first"),
    SettingSpec("guardrail", _fraction, "share of escalated machines in a wave that halts the rollout"),
    SettingSpec("enable_timeout", parse_duration, "how long enablement may stay Enabling"),
    SettingSpec("reboot_timeout", parse_duration, "how long a rebooting machine may take to come back"),
    SettingSpec("approval_timeout", parse_duration, "how long to wait for a reboot approval"),
    SettingSpec("enable_poll_interval", parse_duration, "enablement status poll interval"),
    SettingSpec("reboot_poll_interval", parse_duration, "reboot status poll interval"),
    SettingSpec("run_command_timeout", parse_duration, "how long one Run Command may run"),
    SettingSpec("run_command_attempts", _positive_int, "attempts for a failing Run Command"),
    SettingSpec("disconnected_grace", parse_duration,
                "how long after a Disconnected read a machine is read again before it is skipped"),
    SettingSpec("maintenance_window", parse_window, "weekly reboot window (UTC) for reboot policy 'window'"),
    SettingSpec("escalation_webhook", _url, "URL that receives a JSON POST per escalation"),
    SettingSpec("schedule", _ncrontab, "NCRONTAB schedule of the whole-fleet rollout"),
    SettingSpec("subscriptions", _subscriptions, "subscriptions to roll out to (empty: all readable)"),
    SettingSpec("resource_group", _resource_group, "limit discovery to one resource group"),
    SettingSpec("cloud", _cloud, "Azure cloud"),
    SettingSpec("arm_endpoint", _arm_endpoint, "ARM endpoint (overrides the cloud's)"),
    SettingSpec("baselines_file", _baselines_file, "extra JSON file of Hotpatch baselines"),
    SettingSpec("install_schedule", _ncrontab_or_off,
                "NCRONTAB schedule of the whole fleet's hotpatch installation (empty: off)"),
    SettingSpec("assess_patches", _auto_or_bool,
                "run Update Manager's patch assessment for the next-update forecast (auto: in dry runs only)"),
)
SETTINGS_BY_FIELD = {s.field: s for s in SETTINGS}
SECRET_FIELDS = ("escalation_webhook",)


def _has_secret(policy: Policy) -> bool:
    return any(getattr(policy, secret) for secret in SECRET_FIELDS)


def escalation_webhook_setting(environ: Mapping[str, str]) -> str:
    """The escalation webhook URL from its app setting (``HOTPATCH_ESCALATION_WEBHOOK``), read when it is used:
    it never travels in an orchestration's input. Empty: none. SettingError (which quotes the value: do
    not log it) if it is not an http(s) URL."""
    spec = SETTINGS_BY_FIELD["escalation_webhook"]
    return _parse_one(spec, environ.get(spec.env) or "", spec.env)


def _parse_one(spec: SettingSpec, raw: Any, name: str) -> Any:
    try:
        return spec.parse(raw)
    except ValueError as exc:  # a secret's value is not quoted: the message may be logged or returned
        raise SettingError(name, "***" if spec.field in SECRET_FIELDS else raw, str(exc)) from None


def apply_overrides(base: Policy, overrides: Mapping[str, Any]) -> Policy:
    """Validate ``overrides`` (field names) on top of ``base``; unknown fields are errors."""
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        spec = SETTINGS_BY_FIELD.get(key)
        if spec is None:
            known = ", ".join(s.field for s in SETTINGS)
            raise SettingError(key, raw, f"a known setting ({known})")
        changes[key] = _parse_one(spec, raw, key)
    return replace(base, **changes)


@lru_cache(maxsize=256)
def _policy_from_items(items: tuple[tuple[str, Any], ...]) -> Policy:
    return apply_overrides(Policy(), dict(items))


# HOTPATCH_* names that are not policy settings: the ledger's storage, the task hub, the timer binding the
# install schedule feeds, and the local kit's (a token and CA file for the twin, log level, Azurite's binary).
OTHER_SETTINGS = frozenset({
    "HOTPATCH_LEDGER_CONNECTION", "HOTPATCH_LEDGER_ENDPOINT", "HOTPATCH_LEDGER_TABLE", "HOTPATCH_TASK_HUB",
    "HOTPATCH_INSTALL_TIMER", "HOTPATCH_ARM_TOKEN", "HOTPATCH_ARM_CA_FILE", "HOTPATCH_LOG_LEVEL",
    "HOTPATCH_AZURITE_BIN",
})


def unknown_settings(environ: Mapping[str, str]) -> list[str]:
    """``HOTPATCH_*`` names that are no setting: a misspelt one (``HOTPATCH_CONCURENCY``) leaves the default in
    force, so callers warn about them."""
    known = {spec.env for spec in SETTINGS} | OTHER_SETTINGS
    return sorted(name for name in environ if name.startswith("HOTPATCH_") and name not in known)


def load_policy(environ: Mapping[str, str]) -> Policy:
    """Policy from app settings (``HOTPATCH_*``); an empty or absent setting keeps the default."""
    changes: dict[str, Any] = {}
    for spec in SETTINGS:
        raw = environ.get(spec.env)
        if raw is None or (raw.strip() == "" and spec.field not in ("escalation_webhook", "subscriptions",
                                                                     "install_schedule")):
            continue
        changes[spec.field] = _parse_one(spec, raw, spec.env)
    return check_files(replace(Policy(), **changes), SETTINGS_BY_FIELD["baselines_file"].env)


def check_files(policy: Policy, baselines_setting: str = "baselines_file") -> Policy:
    """Fail now, naming the setting, if a file the policy names cannot be read (activities read it later)."""
    if policy.baselines_file:
        from .baselines import BaselineDataError, load_baselines

        try:
            load_baselines(policy.baselines_file)
        except BaselineDataError as exc:
            raise SettingError(baselines_setting, policy.baselines_file,
                               f"a readable baselines JSON file, or empty ({exc})") from None
    return policy


# --- requests narrow, settings define the maximum (see the module docstring) ------------------------

_REBOOT_ORDER = (RebootPolicy.AUTO.value, RebootPolicy.WINDOW.value, RebootPolicy.APPROVAL.value,
                 RebootPolicy.NEVER.value)
_REQUEST_TIMEOUTS = ("enable_timeout", "reboot_timeout", "approval_timeout", "run_command_timeout")
MAX_REQUEST_STRING = 1024  # characters of any string value in a request


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "array"
    return "object" if isinstance(value, dict) else type(value).__name__


def _check_json_type(field_name: str, value: Any) -> None:
    """A request's values have JSON types: a boolean is ``true``/``false``, a count an integer, a duration a
    string or a number, waves a string or an array of strings and integers. SettingError otherwise."""
    kind = _json_kind(value)
    if field_name == "dry_run":
        ok, expected = kind == "boolean", "a JSON boolean (true or false)"
    elif field_name == "concurrency":
        ok, expected = kind == "number" and isinstance(value, int), "a JSON integer >= 1"
    elif field_name in ("reboot_policy", "resource_group"):
        ok, expected = kind == "string", "a JSON string"
    elif field_name == "waves":
        ok = kind == "string" or (kind == "array" and all(
            isinstance(v, str) or (isinstance(v, int) and not isinstance(v, bool)) for v in value))
        expected = "a JSON string such as \"1,10%,100%\" or an array of counts and percentages"
    else:  # guardrail, durations
        ok, expected = kind in ("string", "number"), "a JSON string or number"
    if not ok:
        raise SettingError(field_name, value, f"{expected}, not a JSON {kind}")
    strings = [value] if kind == "string" else [v for v in value if isinstance(v, str)] if kind == "array" else []
    if sum(len(v) for v in strings) > MAX_REQUEST_STRING:
        raise SettingError(field_name, value, f"{expected} of at most {MAX_REQUEST_STRING} characters")


def _widening(field_name: str, requested: Any, base: Policy) -> str | None:
    """Why ``requested`` (parsed) would widen the app settings' value of ``field_name``; None if it narrows."""
    setting = SETTINGS_BY_FIELD[field_name].env
    current = getattr(base, field_name)
    if field_name == "dry_run":
        return None if requested or not current else f"{setting} makes every run a dry run"
    if field_name == "reboot_policy":
        if _REBOOT_ORDER.index(requested) >= _REBOOT_ORDER.index(current):
            return None
        return (f"{setting} is {current!r}; a request may only choose a stricter reboot policy "
                f"(auto < window < approval < never)")
    if field_name == "resource_group":
        if not current or requested.lower() == current.lower():
            return None
        return f"{setting} limits the scope to resource group {current!r}"
    if field_name == "waves":
        return None
    if requested > current:  # concurrency, timeouts: at most the setting's
        shown = f"{current:g}s" if field_name in _REQUEST_TIMEOUTS else f"{current:g}"
        return f"{setting} allows at most {shown}"
    return None


# What SPEC §6 lets a request set; anything else (the guardrail included, even a stricter one) is the settings'.
REQUEST_FIELDS = ("dry_run", "reboot_policy", "concurrency", "waves", "resource_group", *_REQUEST_TIMEOUTS)


def narrow(base: Policy, overrides: Mapping[str, Any]) -> Policy:
    """``base`` (the app settings) narrowed by a request's ``overrides`` (a parsed JSON object).

    Raises ``SettingError`` for an unknown field or a value that is not valid (wrong JSON type
    included), ``NarrowingError`` (a ``SettingError``) for a field only the settings may set or a
    value that would widen the setting; either names the field and quotes at most a short prefix
    of the value."""
    changes: dict[str, Any] = {}
    for key, raw in overrides.items():
        spec = SETTINGS_BY_FIELD.get(key)
        if spec is None:
            raise SettingError(key, raw, f"a field a request may set ({', '.join(REQUEST_FIELDS)})")
        if key not in REQUEST_FIELDS:
            raise NarrowingError(key, raw, f"it is fixed by the app setting {spec.env} "
                                           f"(a request may set {', '.join(REQUEST_FIELDS)})", fixed=True)
        _check_json_type(key, raw)
        value = _parse_one(spec, raw, key)
        reason = _widening(key, value, base)
        if reason:
            raise NarrowingError(key, raw, reason)
        changes[key] = value
    return replace(base, **changes)
