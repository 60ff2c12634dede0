"""Simulated fleets: scenario files (SPEC §5), generated mixes and the embedded default fleet.

A scenario file is ``{"seed": S, "subscriptions": K or [ids], "groups": [{"count": n,
"machine": {attributes}}]}``. Every machine attribute is optional and defaults to a
ready Windows Server 2025 Datacenter machine (which, on 26100.6899, has the October
2025 licensing bug). A group of n machines is named ``name-1`` … ``name-n``; a group
of one is named ``name``. Unknown keys, attributes or values are errors that name
the group index, the attribute and what is accepted.

Attributes beyond SPEC §5: ``esu_profile`` (false): the machine starts with a license
profile holding an ESU license assignment, Software Assurance and the
``WindowsServerAzureArcMgmt`` product feature, so that a license write which drops
them is visible (the data-loss trap of azure-facts.md).
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from ..jsonfiles import JsonFileError, read_json
from .seeding import stable_uuid

AGENT_STATUSES = ("Connected", "Disconnected", "Error")
HOTPATCH_STATES = ("Disabled", "Enabled")
ENABLE_OUTCOMES = ("ok", "fail", "stuck", "action_required")
AGENT_CONFIG_MODES = ("full", "monitor")
HOTPATCH_BUILD = 26100
MIN_HOTPATCH_REVISION = 1742
LICENSING_BUG_REVISION = 6899  # KB5066835, October 2025

MACHINE_NAME = re.compile(r"^[a-zA-Z0-9\-_.]{1,54}$")
RESOURCE_GROUP_NAME = re.compile(r"^[-\w._()]{1,90}$")
WINDOWS_VERSION = re.compile(r"^10\.0\.(\d+)\.(\d+)$")
DEFAULT_RESOURCE_GROUP = "rg-arc-servers"
MAX_MACHINES = 100_000  # a fleet's bound: scenario counts, generated fleets, ``--machines``
MAX_SUBSCRIPTIONS = 1000
MAX_SCENARIO_BYTES = 64 * 1024 * 1024  # a scenario file larger than this is refused before it is read
MAX_MINUTES = 7 * 24 * 60  # a week: bounds every simulated duration, so no timedelta the twin builds can overflow


class ScenarioError(ValueError):
    """An invalid scenario; the message names where (``groups[2].machine.vbs_status``) and why."""


class FleetTooLarge(ScenarioError):
    """A fleet past ``MAX_MACHINES`` machines (or ``MAX_SUBSCRIPTIONS`` subscriptions), refused before it is built."""


@dataclass(frozen=True)
class MachineSpec:
    """One simulated machine as the scenario describes it (validated, defaults resolved)."""

    name: str
    resource_group: str = DEFAULT_RESOURCE_GROUP
    subscription: int = 0
    status: str = "Connected"
    os_sku: str = "Windows Server 2025 Datacenter"
    os_version: str = "10.0.26100.6899"
    uefi: bool = True
    secure_boot: bool = True
    vbs_status: int = 2
    vsm_starts: bool = True
    hotpatch: str = "Disabled"
    licensing_bug: bool = True
    workaround_applied: bool = False
    enable_outcome: str = "ok"
    enable_minutes: float = 10.0
    reboot_minutes: float = 5.0
    reboot_hangs: bool = False
    run_command_fails: bool = False
    tags: Mapping[str, str] = field(default_factory=dict)
    esu_profile: bool = False
    # The Connected Machine agent as ARM reports it (agentVersion, agentConfiguration): what Run Command needs.
    agent_version: str = ""  # "": a current version (one of the twin's, per machine)
    extensions_enabled: bool = True
    extensions_blocklist: tuple[str, ...] = ()  # "Publisher/Type" entries (azcmagent config extensions.blocklist)
    extensions_allowlist: tuple[str, ...] = ()
    agent_config_mode: str = "full"
    reboot_pending: bool = False  # Windows has a reboot pending (servicing): readiness and assessPatches say so

    @property
    def is_windows(self) -> bool:
        return self.os_sku.lower().startswith("windows")

    @property
    def is_windows_server(self) -> bool:
        return self.os_sku.lower().startswith("windows server")

    @property
    def build(self) -> int | None:
        match = WINDOWS_VERSION.match(self.os_version) if self.is_windows else None
        return int(match.group(1)) if match else None

    @property
    def revision(self) -> int | None:
        match = WINDOWS_VERSION.match(self.os_version) if self.is_windows else None
        return int(match.group(2)) if match else None

    @property
    def edition_id(self) -> str:
        """The registry ``EditionID`` Windows reports for this SKU."""
        sku = self.os_sku.strip().lower()
        if not self.is_windows:
            return ""
        if sku.endswith("azure edition"):
            return "ServerAzureEdition"
        last_word = self.os_sku.strip().split()[-1]
        if self.is_windows_server:
            return "Server" + last_word.capitalize()
        return last_word.capitalize()

    @property
    def is_azure_edition(self) -> bool:
        return self.edition_id == "ServerAzureEdition"

    @property
    def hotpatch_capable(self) -> bool:
        """Whether Arc can enroll this OS in Hotpatch at all (Windows Server 2025, supported edition)."""
        return (
            self.is_windows_server
            and self.build == HOTPATCH_BUILD
            and (self.revision or 0) >= MIN_HOTPATCH_REVISION
            and self.edition_id in ("ServerStandard", "ServerDatacenter", "ServerAzureEdition")
        )


@dataclass(frozen=True)
class Fleet:
    """A validated fleet: the seed, its subscriptions, its machines."""

    seed: int
    subscription_ids: tuple[str, ...]
    machines: tuple[MachineSpec, ...]

    @property
    def tenant_id(self) -> str:
        return stable_uuid(self.seed, "tenant")

    def subscription_of(self, machine: MachineSpec) -> str:
        return self.subscription_ids[machine.subscription]


# --- attribute parsers: raw -> value, raising ValueError(accepted values) ------------------


def _boolean(raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    raise ValueError("true or false")


def _one_of(*accepted: Any) -> Callable[[Any], Any]:
    def parse(raw: Any) -> Any:
        # Of the same type too: 2.0 == 2 and True == 1, but neither is the integer 2 or 1.
        if not any(type(raw) is type(value) and raw == value for value in accepted):
            raise ValueError("one of " + ", ".join(json.dumps(a) for a in accepted))
        return raw

    return parse


def _text(raw: Any) -> str:
    if not isinstance(raw, str) or not raw.strip():
        raise ValueError("a non-empty string")
    return raw.strip()


def _minutes(raw: Any) -> float:
    # NaN and Infinity fail the range check (JSON has neither, but Python's parser reads them).
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 0 <= raw <= MAX_MINUTES:
        raise ValueError(f"a number of minutes from 0 to {MAX_MINUTES}")
    return float(raw)


def _machine_name(raw: Any) -> str:
    if not isinstance(raw, str) or not MACHINE_NAME.match(raw):
        raise ValueError("a machine name of 1-54 letters, digits, '-', '_' or '.'")
    return raw


def _resource_group(raw: Any) -> str:
    if not isinstance(raw, str) or not RESOURCE_GROUP_NAME.match(raw) or raw.endswith("."):
        raise ValueError("a resource group name of 1-90 letters, digits, '-', '_', '.', '(' or ')'")
    return raw


def _subscription_index(raw: Any) -> int:
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
        raise ValueError("an index (0, 1, ...) into the scenario's subscriptions")
    return raw


_AGENT_VERSION = re.compile(r"^\d+\.\d+(\.\d+){0,2}$")
_EXTENSION = re.compile(r"^[A-Za-z0-9.\-_]+/[A-Za-z0-9.\-_]+$")


def _agent_version(raw: Any) -> str:
    if not isinstance(raw, str) or not _AGENT_VERSION.match(raw.strip()):
        raise ValueError("an agent version such as \"1.58.03228.2572\"")
    return raw.strip()


def _extensions(raw: Any) -> tuple[str, ...]:
    if not isinstance(raw, list) or not all(isinstance(e, str) and _EXTENSION.match(e) for e in raw):
        raise ValueError('a list of "Publisher/Type" extensions such as '
                         '["Microsoft.CPlat.Core/RunCommandHandlerWindows"]')
    return tuple(raw)


def _tags(raw: Any) -> dict[str, str]:
    accepted = "an object of at most 50 tags, names of 1-512 characters, string values of at most 256"
    if not isinstance(raw, Mapping) or len(raw) > 50:
        raise ValueError(accepted)
    for key, value in raw.items():
        if not isinstance(key, str) or not 0 < len(key) <= 512 or not isinstance(value, str) or len(value) > 256:
            raise ValueError(accepted)
    return dict(raw)


_ATTRIBUTE_PARSERS: dict[str, Callable[[Any], Any]] = {
    "name": _machine_name,
    "resource_group": _resource_group,
    "subscription": _subscription_index,
    "status": _one_of(*AGENT_STATUSES),
    "os_sku": _text,
    "os_version": _text,
    "uefi": _boolean,
    "secure_boot": _boolean,
    "vbs_status": _one_of(0, 1, 2),
    "vsm_starts": _boolean,
    "hotpatch": _one_of(*HOTPATCH_STATES),
    "licensing_bug": _boolean,
    "workaround_applied": _boolean,
    "enable_outcome": _one_of(*ENABLE_OUTCOMES),
    "enable_minutes": _minutes,
    "reboot_minutes": _minutes,
    "reboot_hangs": _boolean,
    "run_command_fails": _boolean,
    "tags": _tags,
    "esu_profile": _boolean,
    "agent_version": _agent_version,
    "extensions_enabled": _boolean,
    "extensions_blocklist": _extensions,
    "extensions_allowlist": _extensions,
    "agent_config_mode": _one_of(*AGENT_CONFIG_MODES),
    "reboot_pending": _boolean,
}
MACHINE_ATTRIBUTES: tuple[str, ...] = tuple(_ATTRIBUTE_PARSERS)
assert set(MACHINE_ATTRIBUTES) == {f.name for f in fields(MachineSpec)}


def machine_spec(attributes: Mapping[str, Any], where: str = "machine") -> MachineSpec:
    """Validate scenario attributes into a ``MachineSpec``; errors name ``where.attribute``."""
    if not isinstance(attributes, Mapping):
        raise ScenarioError(f"{where}: expected an object of machine attributes, got {attributes!r}")
    values: dict[str, Any] = {}
    for key, raw in attributes.items():
        parse = _ATTRIBUTE_PARSERS.get(key)
        if parse is None:
            raise ScenarioError(f"{where}: unknown attribute {key!r} (known: {', '.join(MACHINE_ATTRIBUTES)})")
        try:
            values[key] = parse(raw)
        except ValueError as exc:
            raise ScenarioError(f"{where}.{key}: {raw!r} is not accepted; expected {exc}") from None
    values.setdefault("name", "machine")

    sku = values.get("os_sku", MachineSpec.os_sku)
    version = values.get("os_version", MachineSpec.os_version)
    if sku.lower().startswith("windows") and not WINDOWS_VERSION.match(version):
        raise ScenarioError(
            f"{where}.os_version: {version!r} is not accepted; expected a Windows version such as "
            "'10.0.26100.6899' (major.minor.build.revision)"
        )
    # Firmware facts: Secure Boot exists only on UEFI (the readiness script reports it off on BIOS,
    # as Confirm-SecureBootUEFI fails there), and VSM runs by default only where it can.
    uefi = values.setdefault("uefi", True)
    secure_boot = values.setdefault("secure_boot", uefi)
    values.setdefault("vbs_status", 2 if uefi and secure_boot else 0)
    spec = MachineSpec(**{k: v for k, v in values.items() if k != "licensing_bug"})
    if "licensing_bug" in values:
        return replace(spec, licensing_bug=values["licensing_bug"])
    affected = (
        spec.is_windows_server
        and spec.build == HOTPATCH_BUILD
        and (spec.revision or 0) >= LICENSING_BUG_REVISION
        and not spec.is_azure_edition
    )
    return replace(spec, licensing_bug=affected)


def subscription_ids_for(seed: int, count: int) -> tuple[str, ...]:
    """Deterministic subscription GUIDs for a generated fleet."""
    return tuple(stable_uuid(seed, "subscription", index) for index in range(count))


def _parse_subscriptions(raw: Any, seed: int) -> tuple[str, ...]:
    if isinstance(raw, int) and not isinstance(raw, bool):
        if not 1 <= raw <= MAX_SUBSCRIPTIONS:
            raise ScenarioError(
                f"subscriptions: {raw!r} is not accepted; expected a count from 1 to {MAX_SUBSCRIPTIONS}"
            )
        return subscription_ids_for(seed, raw)
    if isinstance(raw, list) and raw:
        if len(raw) > MAX_SUBSCRIPTIONS:
            raise ScenarioError(f"subscriptions: {len(raw)} ids is too many; expected at most {MAX_SUBSCRIPTIONS}")
        ids: list[str] = []
        for index, item in enumerate(raw):
            try:
                ids.append(str(uuid.UUID(str(item))))
            except ValueError:
                raise ScenarioError(
                    f"subscriptions[{index}]: {item!r} is not accepted; expected a subscription id (GUID)"
                ) from None
        if len(set(ids)) != len(ids):
            raise ScenarioError("subscriptions: the list repeats a subscription id")
        return tuple(ids)
    raise ScenarioError(f"subscriptions: {raw!r} is not accepted; expected a count >= 1 or a non-empty list of GUIDs")


def _group_names(base: str, count: int) -> list[str]:
    return [base] if count == 1 else [f"{base}-{n}" for n in range(1, count + 1)]


def _check_size(groups: list[Any]) -> None:
    """FleetTooLarge naming the group whose count takes the fleet past MAX_MACHINES, before any machine is built."""
    total = 0
    for index, group in enumerate(groups):
        count = group.get("count", 1) if isinstance(group, Mapping) else 1
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            continue  # the group's own check names it
        total += count
        if total > MAX_MACHINES:
            raise FleetTooLarge(
                f"groups[{index}].count: {count!r} is not accepted; the scenario would have {total:,} machines, "
                f"expected at most {MAX_MACHINES:,}"
            )


def load_scenario(source: str | Path | Mapping[str, Any]) -> Fleet:
    """A fleet from a scenario file path or an already-parsed scenario mapping."""
    if isinstance(source, Mapping):
        scenario: Any = source
    else:
        path = Path(source)
        try:
            if path.is_file() and path.stat().st_size > MAX_SCENARIO_BYTES:
                raise FleetTooLarge(
                    f"scenario file {path}: {path.stat().st_size} bytes is too large; "
                    f"expected at most {MAX_SCENARIO_BYTES} bytes"
                )
            scenario = read_json(path)
        except OSError as exc:
            raise ScenarioError(f"scenario file {path}: {exc.strerror or exc}") from None
        except JsonFileError as exc:
            raise ScenarioError(f"scenario file {path}: {exc}") from None
    if not isinstance(scenario, Mapping):
        raise ScenarioError("scenario: expected a JSON object with seed, subscriptions and groups")
    unknown = sorted(set(scenario) - {"seed", "subscriptions", "groups"})
    if unknown:
        raise ScenarioError(f"scenario: unknown key {unknown[0]!r} (known: seed, subscriptions, groups)")
    seed = scenario.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ScenarioError(f"seed: {seed!r} is not accepted; expected a whole number")
    subscriptions = _parse_subscriptions(scenario.get("subscriptions", 1), seed)
    groups = scenario.get("groups")
    if not isinstance(groups, list) or not groups:
        raise ScenarioError('groups: expected a non-empty list of {"count": n, "machine": {...}}')

    _check_size(groups)
    machines: list[MachineSpec] = []
    seen: dict[tuple[int, str, str], str] = {}
    for index, group in enumerate(groups):
        where = f"groups[{index}]"
        if not isinstance(group, Mapping):
            raise ScenarioError(f"{where}: expected an object with count and machine")
        unknown = sorted(set(group) - {"count", "machine"})
        if unknown:
            raise ScenarioError(f"{where}: unknown key {unknown[0]!r} (known: count, machine)")
        count = group.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ScenarioError(f"{where}.count: {count!r} is not accepted; expected a whole number >= 1")
        attributes = group.get("machine", {})
        template = machine_spec(attributes, where=f"{where}.machine")
        if template.subscription >= len(subscriptions):
            raise ScenarioError(
                f"{where}.machine.subscription: {template.subscription} is not accepted; "
                f"expected an index below {len(subscriptions)} (the scenario has {len(subscriptions)})"
            )
        base = attributes.get("name", f"machine-{index + 1}")  # a mapping: machine_spec checked it
        for name in _group_names(base, count):
            if not MACHINE_NAME.match(name):
                raise ScenarioError(
                    f"{where}.machine.name: {name!r} is too long or invalid once numbered; "
                    "expected at most 54 letters, digits, '-', '_' or '.'"
                )
            key = (template.subscription, template.resource_group.lower(), name.lower())
            if key in seen:
                raise ScenarioError(
                    f"{where}.machine.name: {name!r} in resource group {template.resource_group!r} "
                    f"repeats a machine of {seen[key]}"
                )
            seen[key] = where
            machines.append(replace(template, name=name))
    return Fleet(seed=seed, subscription_ids=subscriptions, machines=tuple(machines))


# --- generated fleets ----------------------------------------------------------------------

_RESOURCE_GROUPS = ("rg-arc-datacenter", "rg-arc-branches", "rg-arc-lab")
_ENVIRONMENTS = ("prod", "prod", "prod", "test", "dev")
_OWNERS = ("platform", "finance-apps", "erp", "web", "data")

# (weight per 1000, attributes). Callables take the generator's Random for per-machine variety.
_MIX: tuple[tuple[int, Callable[[random.Random], dict[str, Any]]], ...] = (
    (500, lambda r: {}),
    (40, lambda r: {"os_version": "10.0.26100.6905"}),
    (40, lambda r: {"os_version": r.choice(["10.0.26100.4946", "10.0.26100.6584"])}),
    (90, lambda r: {"vbs_status": 0, "vsm_starts": r.random() < 0.9}),
    (10, lambda r: {"vbs_status": 1}),
    (70, lambda r: {"hotpatch": "Enabled", "workaround_applied": r.random() < 0.5}),
    (40, lambda r: {"os_sku": "Windows Server 2025 Datacenter: Azure Edition"}),
    (
        40,
        lambda r: {
            "os_sku": r.choice(["Windows Server 2022 Datacenter", "Windows Server 2022 Standard"]),
            "os_version": "10.0.20348.4294",
        },
    ),
    (15, lambda r: {"os_version": "10.0.26100.1150"}),
    (40, lambda r: {"status": "Disconnected"}),
    (10, lambda r: {"status": "Error"}),
    (40, lambda r: {"tags": {"hotpatch": r.choice(["exclude", "Exclude"])}}),
    (10, lambda r: {"uefi": False}),
    (5, lambda r: {"enable_outcome": "stuck"}),
    (5, lambda r: {"enable_outcome": "fail"}),
    (5, lambda r: {"reboot_hangs": True}),
    (10, lambda r: {"run_command_fails": True}),
    (
        15,
        lambda r: {"os_sku": r.choice(["Ubuntu 22.04.5 LTS", "Red Hat Enterprise Linux 9.4"]), "os_version": "5.15.0"},
    ),
    (5, lambda r: {"os_version": "10.0.27902.1000"}),
    (10, lambda r: {"esu_profile": True}),
)
assert sum(weight for weight, _ in _MIX) == 1000
_READY: tuple[tuple[int, Callable[[random.Random], dict[str, Any]]], ...] = (_MIX[0],)
FLEET_MIXES = {"mixed": _MIX, "ready": _READY}


def generate_fleet(machines: int = 100, subscriptions: int = 1, seed: int = 0, mix: str = "mixed") -> Fleet:
    """A fleet deterministic for (machines, subscriptions, seed, mix).

    ``mixed``, a realistic mix: mostly ready Datacenter/Standard machines on 26100.6899
    (licensing bug), some with VSM off, some already enrolled, a few Azure Edition, older
    builds and 2022, some disconnected, some tagged ``hotpatch=exclude``, and rare BIOS,
    stuck or failing enablement, hanging reboots, blocked Run Command and Linux machines.
    ``ready``: only the first kind (every machine is enabled, after the licensing workaround).
    """
    if machines < 1 or subscriptions < 1:
        raise ScenarioError("generate_fleet: machines and subscriptions must be >= 1")
    if machines > MAX_MACHINES:
        raise FleetTooLarge(f"generate_fleet: {machines} machines is too many; expected at most {MAX_MACHINES:,}")
    if subscriptions > MAX_SUBSCRIPTIONS:
        raise FleetTooLarge(
            f"generate_fleet: {subscriptions} subscriptions is too many; expected at most {MAX_SUBSCRIPTIONS:,}"
        )
    if mix not in FLEET_MIXES:
        raise ScenarioError(f"generate_fleet: unknown mix {mix!r} (expected one of {sorted(FLEET_MIXES)})")
    profiles = FLEET_MIXES[mix]
    rng = random.Random(f"arc-hotpatch-fleet:{seed}")
    weights = [weight for weight, _ in profiles]
    specs: list[MachineSpec] = []
    for index in range(1, machines + 1):
        _, profile = rng.choices(profiles, weights=weights)[0]
        attributes: dict[str, Any] = {
            "name": f"srv-{index:05d}",
            "subscription": rng.randrange(subscriptions),
            "resource_group": rng.choice(_RESOURCE_GROUPS),
            "os_sku": rng.choice(["Windows Server 2025 Datacenter"] * 3 + ["Windows Server 2025 Standard"] * 2),
            "enable_minutes": rng.choice([8, 9, 10, 10, 11, 12, 14]),
            "reboot_minutes": rng.choice([3, 4, 5, 5, 6, 8]),
        }
        tags = {"env": rng.choice(_ENVIRONMENTS), "owner": rng.choice(_OWNERS)}
        extra = profile(rng)
        tags.update(extra.pop("tags", {}))
        attributes.update(extra, tags=tags)
        specs.append(machine_spec(attributes, where=f"generated machine {index}"))
    return Fleet(seed=seed, subscription_ids=subscription_ids_for(seed, subscriptions), machines=tuple(specs))


DEFAULT_FLEET_SEED = 2025

# The embedded default fleet: one or more machines for every final state and reason of SPEC §2
# (under reboot policy auto, workaround mode proactive). Subscription 0 is the "happy" estate,
# subscription 1 the troubled one.
_DEFAULT_FLEET_GROUPS: tuple[dict[str, Any], ...] = (
    {"count": 3, "machine": {"name": "web", "resource_group": "rg-arc-web"}},
    {"machine": {"name": "sql-std", "resource_group": "rg-arc-data", "os_sku": "Windows Server 2025 Standard"}},
    {"machine": {"name": "vsm-off", "resource_group": "rg-arc-web", "vbs_status": 0}},
    {
        "machine": {
            "name": "enrolled",
            "resource_group": "rg-arc-web",
            "hotpatch": "Enabled",
            "workaround_applied": True,
        }
    },
    {"machine": {"name": "pre-october", "resource_group": "rg-arc-data", "os_version": "10.0.26100.4946"}},
    {"machine": {"name": "esu-linked", "resource_group": "rg-arc-data", "esu_profile": True}},
    {
        "machine": {
            "name": "azure-edition",
            "resource_group": "rg-arc-data",
            "os_sku": "Windows Server 2025 Datacenter: Azure Edition",
        }
    },
    {
        "machine": {
            "name": "legacy-2022",
            "resource_group": "rg-arc-data",
            "os_sku": "Windows Server 2022 Datacenter",
            "os_version": "10.0.20348.4294",
        }
    },
    {
        "machine": {
            "name": "ubuntu",
            "resource_group": "rg-arc-web",
            "os_sku": "Ubuntu 22.04.5 LTS",
            "os_version": "5.15.0",
        }
    },
    {"machine": {"name": "insider", "resource_group": "rg-arc-lab", "os_version": "10.0.27902.1000"}},
    {"machine": {"name": "essentials", "resource_group": "rg-arc-lab", "os_sku": "Windows Server 2025 Essentials"}},
    {"machine": {"name": "rtm-build", "resource_group": "rg-arc-lab", "os_version": "10.0.26100.1150"}},
    {"machine": {"name": "excluded", "resource_group": "rg-arc-web", "tags": {"hotpatch": "exclude"}}},
    {"machine": {"name": "offline", "resource_group": "rg-arc-web", "status": "Disconnected"}},
    {"machine": {"name": "agent-error", "subscription": 1, "resource_group": "rg-arc-branch", "status": "Error"}},
    {"machine": {"name": "bios", "subscription": 1, "resource_group": "rg-arc-branch", "uefi": False}},
    {
        "machine": {
            "name": "no-vsm",
            "subscription": 1,
            "resource_group": "rg-arc-branch",
            "vbs_status": 0,
            "vsm_starts": False,
        }
    },
    {"machine": {"name": "hangs", "subscription": 1, "resource_group": "rg-arc-branch", "reboot_hangs": True}},
    {
        "machine": {
            "name": "enable-fails",
            "subscription": 1,
            "resource_group": "rg-arc-branch",
            "enable_outcome": "fail",
            "workaround_applied": True,
        }
    },
    {
        "machine": {
            "name": "enable-stuck",
            "subscription": 1,
            "resource_group": "rg-arc-branch",
            "enable_outcome": "stuck",
            "workaround_applied": True,
        }
    },
    {"machine": {"name": "blocked", "subscription": 1, "resource_group": "rg-arc-branch", "run_command_fails": True}},
    # SPEC §6: Run Command refused as the agent is (found from the ARM resource, before any change: these count
    # toward no wave). enable_outcome "action_required" is left out: as a canary it would halt the demo rollout.
    {"machine": {"name": "old-agent", "subscription": 1, "resource_group": "rg-arc-branch",
                 "agent_version": "1.31.02724.1004"}},
    {"machine": {"name": "monitor-only", "subscription": 1, "resource_group": "rg-arc-branch",
                 "agent_config_mode": "monitor"}},

    {
        "count": 2,
        "machine": {
            "name": "branch",
            "subscription": 1,
            "resource_group": "rg-arc-branch",
            "os_sku": "Windows Server 2025 Standard",
        },
    },
)


def default_fleet() -> Fleet:
    """The embedded default fleet (27 machines, 2 subscriptions) covering every final state."""
    return load_scenario(
        {"seed": DEFAULT_FLEET_SEED, "subscriptions": 2, "groups": [dict(g) for g in _DEFAULT_FLEET_GROUPS]}
    )


def fleet_from_options(
    machines: int | None = None,
    subscriptions: int | None = None,
    seed: int | None = None,
    scenario: str | Path | None = None,
) -> Fleet:
    """The CLI's fleet flags: a scenario file wins, else a generated fleet, else the default fleet."""
    if scenario is not None:
        if machines is not None or subscriptions is not None:
            raise ScenarioError("--scenario cannot be combined with --machines or --subscriptions")
        return load_scenario(scenario)
    if machines is None and subscriptions is None and seed is None:
        return default_fleet()
    return generate_fleet(machines=machines or 100, subscriptions=subscriptions or 1, seed=seed or 0)
