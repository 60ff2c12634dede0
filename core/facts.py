"""Machine facts from the ARM resource (SPEC §2), parsed from the SDK's JSON form.

Activities return ``machine.as_dict()``-style JSON (camelCase as ARM sends it);
everything here is pure, so orchestrators can use it during replay.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .vocabulary import disconnected_reason  # noqa: F401  (re-exported for callers)

HOTPATCH_BUILD = 26100
MIN_HOTPATCH_REVISION = 1742  # seed: "build 26100.1742 or later"

SUPPORTED_EDITIONS = ("standard", "datacenter", "datacenter: azure edition")
AZURE_EDITION = "datacenter: azure edition"

ENABLEMENT_ENABLED, ENABLEMENT_FAILED, ENABLEMENT_ACTION_REQUIRED, ENABLEMENT_PENDING = (
    "enabled", "failed", "action_required", "pending")

_VERSION = re.compile(r"^\s*(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?\s*$")
_SKU = re.compile(r"^\s*windows\s+server\s+(?:\d{4}\s+)?(.*?)\s*$", re.IGNORECASE)


class MachinePayloadError(ValueError):
    """An ARM machine payload without what the workflow needs; names the field."""


@dataclass(frozen=True)
class OsVersion:
    major: int
    minor: int
    build: int
    revision: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.build}.{self.revision}"


def parse_os_version(text: str | None) -> OsVersion | None:
    """``10.0.26100.6899`` → build 26100, revision 6899 (integers). None if not parseable."""
    match = _VERSION.match(text or "")
    if not match:
        return None
    major, minor, build, revision = (int(g) if g is not None else 0 for g in match.groups())
    return OsVersion(major, minor, build, revision)


def parse_edition(os_sku: str | None) -> str | None:
    """``Windows Server 2025 Datacenter: Azure Edition`` → ``datacenter: azure edition``.

    None when the SKU is not Windows Server at all.
    """
    match = _SKU.match(os_sku or "")
    if not match:
        return None
    edition = " ".join(match.group(1).lower().replace(":", ": ").split())
    if edition == "datacenter azure edition":  # some agents omit the colon
        edition = AZURE_EDITION
    return edition


@dataclass(frozen=True)
class MachineFacts:
    id: str
    name: str
    subscription_id: str
    resource_group: str
    status: str
    os_type: str
    os_sku: str
    os_version_text: str
    tags: dict[str, str] = field(default_factory=dict)
    location: str = ""
    hotpatch_feature_status: str | None = None  # licenseProfile Hotpatch feature subscriptionStatus
    hotpatch_enablement_status: str | None = None  # patchSettings.status.hotpatchEnablementStatus
    # The license profile's product features as the instance view shows them ({name, subscriptionStatus}):
    # what a merge must keep when it enables Hotpatch.
    license_features: tuple[dict[str, Any], ...] = ()
    # Whether the license profile holds anything a replacing PUT would drop (product features or type, an
    # ESU license assignment, Software Assurance): without it, a new profile is simply created.
    license_in_use: bool = True
    # The two levels of Hotpatch enablement report their errors apart: the license feature's and the machine's.
    hotpatch_feature_error: str = ""
    hotpatch_enablement_error: str = ""
    agent_version: str = ""  # properties.agentVersion ("1.58.03228.2572"), "" when ARM does not say
    # properties.agentConfiguration, what decides whether Run Command may run (azcmagent config).
    extensions_enabled: str = ""  # "true" | "false" | "" (not reported)
    extensions_allowlist: tuple[str, ...] = ()  # "Publisher/Type" entries
    extensions_blocklist: tuple[str, ...] = ()
    config_mode: str = ""  # "full" | "monitor" | ""

    @property
    def os_version(self) -> OsVersion | None:
        return parse_os_version(self.os_version_text)

    @property
    def edition(self) -> str | None:
        return parse_edition(self.os_sku)

    @property
    def is_windows_server(self) -> bool:
        return self.os_type.lower() in ("windows", "") and self.edition is not None

    @property
    def hotpatch_enabled(self) -> bool:
        """The license level: the Hotpatch feature's subscriptionStatus is Enabled (what a write asks for)."""
        return (self.hotpatch_feature_status or "").lower() == "enabled"

    @property
    def enablement(self) -> str:
        """Both levels at once: ``enabled`` when the license feature is Enabled and the machine's
        hotpatchEnablementStatus is too (or not reported at all), ``failed`` when the feature reports Failed,
        ``action_required`` when the machine reports ActionRequired, else ``pending`` (Enabling,
        PendingEvaluation, ...: keep waiting)."""
        feature = (self.hotpatch_feature_status or "").lower()
        machine = (self.hotpatch_enablement_status or "").lower()
        if feature == "failed":
            return ENABLEMENT_FAILED
        if machine == "actionrequired":
            return ENABLEMENT_ACTION_REQUIRED
        if feature == "enabled" and machine in ("enabled", ""):
            return ENABLEMENT_ENABLED
        return ENABLEMENT_PENDING

    @property
    def enablement_error(self) -> str:
        """What Azure said of a failed or blocked enablement (the machine level first: it names the action)."""
        return self.hotpatch_enablement_error or self.hotpatch_feature_error

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "name": self.name, "subscription_id": self.subscription_id,
            "resource_group": self.resource_group, "status": self.status, "os_type": self.os_type,
            "os_sku": self.os_sku, "os_version": self.os_version_text, "tags": dict(self.tags),
            "location": self.location, "hotpatch_feature_status": self.hotpatch_feature_status,
            "hotpatch_enablement_status": self.hotpatch_enablement_status,
            "license_features": [dict(f) for f in self.license_features],
            "license_in_use": self.license_in_use, "hotpatch_feature_error": self.hotpatch_feature_error,
            "hotpatch_enablement_error": self.hotpatch_enablement_error, "agent_version": self.agent_version,
            "extensions_enabled": self.extensions_enabled, "extensions_allowlist": list(self.extensions_allowlist),
            "extensions_blocklist": list(self.extensions_blocklist), "config_mode": self.config_mode,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MachineFacts:
        return cls(
            id=data["id"], name=data["name"], subscription_id=data["subscription_id"],
            resource_group=data["resource_group"], status=data["status"], os_type=data["os_type"],
            os_sku=data["os_sku"], os_version_text=data["os_version"], tags=dict(data.get("tags") or {}),
            location=data.get("location", ""), hotpatch_feature_status=data.get("hotpatch_feature_status"),
            hotpatch_enablement_status=data.get("hotpatch_enablement_status"),
            license_features=tuple(dict(f) for f in data.get("license_features") or ()),
            license_in_use=bool(data.get("license_in_use", True)),
            hotpatch_feature_error=data.get("hotpatch_feature_error", ""),
            hotpatch_enablement_error=data.get("hotpatch_enablement_error", ""),
            agent_version=data.get("agent_version", ""), extensions_enabled=data.get("extensions_enabled", ""),
            extensions_allowlist=tuple(data.get("extensions_allowlist") or ()),
            extensions_blocklist=tuple(data.get("extensions_blocklist") or ()), config_mode=data.get("config_mode", ""),
        )


# The names HybridCompute 2025-01-13 allows: a subscription GUID, a resource group of 1-90 letters, digits,
# - _ . ( ) (not ending in .), a machine name of 1-54 letters, digits, - _ . (as its path parameter's pattern).
_ID = re.compile(
    r"^/subscriptions/(?P<sub>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
    r"/resourceGroups/(?P<rg>[-\w.()]{0,89}[-\w()])/providers/"
    r"Microsoft\.HybridCompute/machines/(?P<name>[a-z0-9\-_.]{1,54})$",
    re.IGNORECASE,
)


def parse_machine_id(resource_id: str) -> tuple[str, str, str]:
    """(subscription id, resource group, machine name) of an Arc machine resource id."""
    match = _ID.match(resource_id or "") if isinstance(resource_id, str) else None
    if not match or not match.group("name").strip("."):  # "." and ".." are path steps, not names
        raise MachinePayloadError(
            f"not an Arc machine resource id: {str(resource_id)[:300]!r} (expected /subscriptions/<GUID>/"
            "resourceGroups/<rg>/providers/Microsoft.HybridCompute/machines/<name>, a name of 1-54 letters, "
            "digits, - _ .)"
        )
    return match.group("sub").lower(), match.group("rg"), match.group("name")


def product_features(license_profile: dict[str, Any] | None) -> list[dict[str, Any]]:
    """``{name, subscriptionStatus}`` of each product feature of a license profile (or its instance view)."""
    features = ((license_profile or {}).get("productProfile") or {}).get("productFeatures") or []
    if not isinstance(features, list):
        raise MachinePayloadError("licenseProfile.productProfile.productFeatures must be a list")
    return [{"name": str(f.get("name", "")), "subscriptionStatus": f.get("subscriptionStatus")}
            for f in features if isinstance(f, dict)]


def hotpatch_feature_status(license_profile: dict[str, Any] | None) -> str | None:
    """The Hotpatch feature's read-back ``subscriptionStatus`` from a license profile's properties."""
    for feature in product_features(license_profile):
        if feature["name"].lower() == "hotpatch":
            return feature["subscriptionStatus"]
    return None


def error_text(error: Any) -> str:
    """An ARM ``ErrorDetail`` as one line: ``code: message`` (empty when there is none)."""
    if not isinstance(error, dict):
        return ""
    code, message = str(error.get("code") or "").strip(), str(error.get("message") or "").strip()
    return f"{code}: {message}" if code and message else code or message


def _hotpatch_feature_error(license_profile: dict[str, Any] | None) -> str:
    features = ((license_profile or {}).get("productProfile") or {}).get("productFeatures") or []
    for feature in features if isinstance(features, list) else []:
        if isinstance(feature, dict) and str(feature.get("name", "")).lower() == "hotpatch":
            return error_text(feature.get("error"))
    return ""


def _extensions(value: Any, where: str) -> tuple[str, ...]:
    """``[{publisher, type}]`` of an agent configuration list as ``Publisher/Type`` entries."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
        raise MachinePayloadError(f"agentConfiguration.{where} must be a list of {{publisher, type}} objects")
    return tuple(f"{v.get('publisher') or ''}/{v.get('type') or ''}" for v in value)


def facts_from_arm(machine: dict[str, Any]) -> MachineFacts:
    """MachineFacts from a machine GET (``$expand=instanceView``) body, as ARM/the SDK's as_dict send it."""
    if not isinstance(machine, dict):
        raise MachinePayloadError(f"machine payload must be a JSON object, got {type(machine).__name__}")
    resource_id = machine.get("id")
    if not resource_id:
        raise MachinePayloadError("machine payload has no 'id'")
    subscription_id, resource_group, name = parse_machine_id(resource_id)
    props = machine.get("properties")
    if not isinstance(props, dict):
        raise MachinePayloadError(f"machine {resource_id}: payload has no 'properties' object")
    os_profile = props.get("osProfile") or {}
    patch_status = (
        ((os_profile.get("windowsConfiguration") or {}).get("patchSettings") or {}).get("status") or {}
    )
    tags = machine.get("tags") or {}
    if not isinstance(tags, dict):
        raise MachinePayloadError(f"machine {resource_id}: 'tags' must be an object")
    agent = props.get("agentConfiguration") or {}
    if not isinstance(agent, dict):
        raise MachinePayloadError(f"machine {resource_id}: 'agentConfiguration' must be an object")
    return MachineFacts(
        id=resource_id,
        name=machine.get("name") or name,
        subscription_id=subscription_id,
        resource_group=resource_group,
        status=str(props.get("status") or "Unknown"),
        os_type=str(props.get("osType") or ""),
        os_sku=str(props.get("osSku") or props.get("osName") or ""),
        os_version_text=str(props.get("osVersion") or ""),
        tags={str(k): str(v) for k, v in tags.items()},
        location=str(machine.get("location") or ""),
        hotpatch_feature_status=hotpatch_feature_status(props.get("licenseProfile")),
        hotpatch_enablement_status=patch_status.get("hotpatchEnablementStatus"),
        license_features=tuple(product_features(props.get("licenseProfile"))),
        license_in_use=license_in_use(props.get("licenseProfile")),
        hotpatch_feature_error=_hotpatch_feature_error(props.get("licenseProfile")),
        hotpatch_enablement_error=error_text(patch_status.get("error")),
        agent_version=str(props.get("agentVersion") or ""),
        extensions_enabled=str(agent.get("extensionsEnabled") or "").strip().lower(),
        extensions_allowlist=_extensions(agent.get("extensionsAllowList"), "extensionsAllowList"),
        extensions_blocklist=_extensions(agent.get("extensionsBlockList"), "extensionsBlockList"),
        config_mode=str(agent.get("configMode") or "").strip().lower(),
    )


def license_in_use(view: dict[str, Any] | None) -> bool:
    """The machine's license profile (instance view) holds something a replacing PUT would drop."""
    if view is None:
        return False
    product = view.get("productProfile") or {}
    esu = view.get("esuProfile") or {}
    return bool(product.get("productFeatures") or product.get("productType") or product.get("subscriptionStatus")
                or esu.get("assignedLicense") or (view.get("softwareAssurance") or {}).get("softwareAssuranceCustomer"))
