"""One simulated Arc-enabled machine: its Windows state, agent, license profile and runs.

Nothing here runs in the background. Everything that takes time (a run finishing, a
scheduled reboot, the boot coming back, Hotpatch enablement settling, an agent flap)
is an event with a due time in the machine's own queue; ``advance(now)`` replays the
events that are due, in time order, before a request looks at the machine. Time is
whatever the caller's clock says, so a virtual clock makes hours cost nothing.

The behaviour follows the seed procedure (``../shared/seed``) and azure-facts.md:

- VSM runs after a boot iff ``EnableVirtualizationBasedSecurity`` = 1, UEFI, Secure
  Boot and the hardware cooperates (``vsm_starts``).
- Hotpatch enablement (license profile feature ``Hotpatch`` set to ``Enable``) moves
  Enabling → Enabled after ``enable_minutes`` if VSM is running, → Failed if VSM is
  not running; on a machine with the October 2025 licensing bug it stays Enabling
  until the workaround's override is active after a reboot, then completes
  ``enable_minutes`` later (or at the original time, whichever is later).
- ``apply_changes`` sets VBS (``EnableVsm``), schedules the reboot, and with ``ApplyWorkaround``
  stops ``himds`` and applies the licensing override, so its own result is then never
  reported: the run stays Running forever; the reboot still happens.
- A machine that is down, disconnected or has ``himds`` stopped picks up no runs and
  settles no enablement until its agent is back.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from .faults import Faults
from .fleet import MachineSpec
from .scripts import (
    APPLY_CHANGES,
    READINESS,
    ScriptFailure,
    ScriptOutcome,
    bind_parameters,
    compact_json,
    keep_last_4kb,
)
from .seeding import stable_choice, stable_uniform, stable_unit, stable_uuid

# Registry values the scripts read and write (full paths, as an operator would name them).
REG_CURRENT_VERSION = "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion"
REG_VBS = "HKLM\\System\\CurrentControlSet\\Control\\DeviceGuard\\EnableVirtualizationBasedSecurity"
REG_LICENSING_OVERRIDE = (
    "HKLM\\SYSTEM\\CurrentControlSet\\Policies\\Microsoft\\FeatureManagement\\Overrides\\4264695439"
)
REG_LICENSE_MUTEX = (
    "HKLM\\SOFTWARE\\Microsoft\\Windows NT\\CurrentVersion\\Subscriptions\\DeviceLicensingServiceCommandMutex"
)

HOTPATCH_FEATURE = "Hotpatch"
ARC_MANAGEMENT_FEATURE = "WindowsServerAzureArcMgmt"
TERMINAL_EXECUTION_STATES = frozenset({"Succeeded", "Failed", "TimedOut", "Canceled"})
ENABLING_STATES = frozenset({"Enabled", "Enabling"})
DISABLING_STATES = frozenset({"Disabled", "Disabling"})
FEATURE_SETTLE_SECONDS = 120  # features other than Hotpatch (and disenrollment) settle quickly
DEFAULT_RUN_TIMEOUT_SECONDS = 5400  # Run Command's default script timeout (90 minutes)
ARM_RUN_GRACE_SECONDS = 300  # ARM gives up on a run this long after the script's timeout

_LOCATIONS = ("eastus", "westeurope", "southeastasia", "centralus", "northeurope")
_AGENT_VERSIONS = ("1.56.03167.2461", "1.57.03189.2494", "1.58.03228.2572")
RUN_COMMAND_HANDLER = ("Microsoft.CPlat.Core", "RunCommandHandlerWindows")
RUN_COMMAND_EXTENSION = "/".join(RUN_COMMAND_HANDLER)
MIN_RUN_COMMAND_AGENT = (1, 33)


class _Absent:
    """Marks a field missing from a request body (distinct from an explicit null)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


@dataclass(eq=False)
class ProductFeature:
    """A product feature's status as ARM reports it (identity matters: events point at it)."""

    name: str
    status: str
    enrollment_date: datetime | None = None
    disenrollment_date: datetime | None = None
    error: dict[str, str] | None = None
    waiting_for: str | None = None  # "agent" or "licensing_fix" while an Enabling cannot settle


@dataclass
class LicenseProfile:
    location: str
    tags: dict[str, str]
    software_assurance_customer: bool | None
    esu_assigned_license: str | None
    product_type: str | None
    product_subscription: ProductFeature | None  # the top-level (pay-as-you-go) subscription status
    features: list[ProductFeature]
    provisioning_state: str
    provisioned_at: datetime

    def feature(self, name: str) -> ProductFeature | None:
        for feature in self.features:
            if feature.name.lower() == name.lower():
                return feature
        return None

    def provisioning_state_at(self, now: datetime) -> str:
        return "Succeeded" if now >= self.provisioned_at else self.provisioning_state


@dataclass(frozen=True)
class LicenseProfileChange:
    """A validated license profile write; each field is ``ABSENT`` or the body's value."""

    location: Any = ABSENT
    tags: Any = ABSENT
    software_assurance_customer: Any = ABSENT
    esu_assigned_license: Any = ABSENT
    product_type: Any = ABSENT
    product_subscription_status: Any = ABSENT
    features: Any = ABSENT  # list of (name, subscriptionStatus or None)


@dataclass(frozen=True, slots=True)
class LicenseWrite:
    """One license profile write as the twin received it (for tests and reports)."""

    method: str
    at: datetime
    body: dict[str, Any] | None
    dropped_features: tuple[str, ...] = ()
    dropped_esu_license: bool = False
    dropped_software_assurance: bool = False


@dataclass(frozen=True, slots=True)
class RunRequest:
    """A validated Run Command PUT body."""

    location: str
    tags: dict[str, str]
    source: dict[str, Any]
    parameters: list[dict[str, str]]
    protected_parameters: list[dict[str, str]]
    async_execution: bool
    timeout_in_seconds: int | None
    run_as_user: str | None
    output_blob_uri: str | None
    error_blob_uri: str | None
    script_name: str | None


@dataclass(eq=False, slots=True)  # slots: tens of thousands of runs in a large simulation
class RunCommand:
    """One execution of a run command resource (a PUT); a reused name makes a new one."""

    name: str
    sequence: int
    request: RunRequest
    created_at: datetime
    replaced_existing: bool
    arm_deadline: datetime
    pickup_seconds: float
    duration_seconds: float
    fault_lost_result: bool
    tags: dict[str, str] = field(default_factory=dict)
    execution_state: str = "Pending"
    execution_message: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    exit_code: int | None = None
    output: str = ""
    error: str = ""
    provisioning_error: dict[str, str] | None = None
    result_lost: bool = False
    unreported: ScriptOutcome | None = None
    waiting_for_agent: bool = False
    deleted: bool = False

    @property
    def terminal(self) -> bool:
        return self.execution_state in TERMINAL_EXECUTION_STATES

    def provisioning_state_at(self, now: datetime) -> str:
        """``provisioningState``: whether the agent ran the script, not whether it succeeded."""
        if self.provisioning_error is not None:
            return "Failed"
        if self.terminal or (self.request.async_execution and self.start_time is not None):
            return "Succeeded"
        if now >= self.arm_deadline:
            return "Failed"
        return "Updating" if self.replaced_existing else "Creating"

    def provisioning_error_at(self, now: datetime) -> dict[str, str] | None:
        if self.provisioning_error is not None:
            return self.provisioning_error
        if self.provisioning_state_at(now) == "Failed":
            return {
                "code": "OperationTimedOut",
                "message": (
                    f"Run command '{self.name}' did not report a result before its timeout; "
                    "the Connected Machine agent may be unreachable."
                ),
            }
        return None


def _z(moment: datetime) -> str:
    """``yyyy-MM-ddTHH:mm:ssZ`` as the scripts print times."""
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def machine_resource_id(subscription_id: str, resource_group: str, name: str) -> str:
    """A machine's ARM resource id; lower-cased, it is the machine's key in the twin's indexes."""
    return (
        f"/subscriptions/{subscription_id}/resourceGroups/{resource_group}"
        f"/providers/Microsoft.HybridCompute/machines/{name}"
    )


class SimulatedMachine:
    """One machine; call ``advance(now)`` before reading or changing it."""

    # Slots: ten thousand machines in a large simulation, each a dict of some forty attributes otherwise.
    __slots__ = (
        "_event_sequence", "_events", "_fault_seed", "_faults", "_flapping", "_seed", "agent_status",
        "agent_version", "boot_times", "down", "enablement_action_required", "himds", "hotfixes",
        "hotpatched_months", "installation_type", "key", "last_status_change", "license_mutex", "license_profile",
        "license_writes", "licensing_fix_active", "licensing_override", "location", "name", "payg_enrolled",
        "principal_id", "reboots", "resource_group", "resource_id", "run_history", "runs", "scheduled_reboot_at",
        "servicing_reboot_pending", "spec", "subscription_id", "tags", "tenant_id", "vbs_configured", "vbs_status",
        "vm_id", "vm_uuid",
    )

    def __init__(
        self,
        spec: MachineSpec,
        *,
        subscription_id: str,
        tenant_id: str,
        seed: int,
        started_at: datetime,
        faults: Faults,
        fault_seed: int,
    ) -> None:
        self.spec = spec
        self.name = spec.name
        self.subscription_id = subscription_id
        self.resource_group = spec.resource_group
        self.tenant_id = tenant_id
        self.resource_id = machine_resource_id(subscription_id, spec.resource_group, spec.name)
        self.key = self.resource_id.lower()
        self._seed = seed
        self._faults = faults
        self._fault_seed = fault_seed
        self.location = stable_choice(_LOCATIONS, seed, "location", subscription_id, spec.resource_group.lower())
        self.vm_id = stable_uuid(seed, "vmId", self.key)
        self.vm_uuid = stable_uuid(seed, "vmUuid", self.key).upper()
        self.principal_id = stable_uuid(seed, "principal", self.key)
        self.agent_version = spec.agent_version or stable_choice(_AGENT_VERSIONS, seed, "agent", self.key)
        self.tags = dict(spec.tags)

        # Windows, as the readiness script sees it.
        self.installation_type = self._installation_type()
        self.hotfixes = self._hotfixes()
        self.vbs_status = spec.vbs_status
        self.vbs_configured: int | None = 1 if spec.vbs_status in (1, 2) else None
        self.licensing_override: int | None = 1 if spec.workaround_applied else None
        self.license_mutex = spec.licensing_bug and not spec.workaround_applied
        self.licensing_fix_active = spec.workaround_applied
        self.servicing_reboot_pending = spec.reboot_pending  # cleared by the next boot
        self.hotpatched_months: set[str] = set()  # the months whose hotpatches installPatches installed
        # Set when enablement settles ActionRequired (enable_outcome "action_required"): the machine level's error.
        self.enablement_action_required: dict[str, str] | None = None
        self.himds = "Running"
        self.down = False
        first_boot = started_at - timedelta(days=stable_uniform(1, 40, seed, "boot", self.key))
        self.boot_times: list[datetime] = [first_boot.replace(microsecond=0)]
        self.reboots = 0
        self.scheduled_reboot_at: datetime | None = None

        # The agent, as ARM sees it.
        self.agent_status = spec.status
        if spec.status == "Connected":
            self.last_status_change = self.boot_times[0] + timedelta(minutes=2)
        else:
            offline_days = stable_uniform(0.5, 20, seed, "offline", self.key)
            self.last_status_change = (started_at - timedelta(days=offline_days)).replace(microsecond=0)
        self._flapping = False

        self.license_profile = self._initial_license_profile(started_at)
        self.license_writes: list[LicenseWrite] = []
        self.payg_enrolled = False
        self.runs: dict[str, RunCommand] = {}  # lower-cased name -> current execution
        self.run_history: list[RunCommand] = []  # every execution, in creation order

        self._events: list[tuple[datetime, int, str, Any]] = []
        self._event_sequence = itertools.count()
        self._schedule_flap(started_at)

    # --- derived facts -----------------------------------------------------------------

    @property
    def agent_reachable(self) -> bool:
        """Whether the Connected Machine agent can pick up work right now."""
        return self.agent_status == "Connected" and self.himds == "Running" and not self.down

    @property
    def last_boot(self) -> datetime:
        return self.boot_times[-1]

    @property
    def hotpatch_feature(self) -> ProductFeature | None:
        return self.license_profile.feature(HOTPATCH_FEATURE) if self.license_profile else None

    @property
    def registry(self) -> dict[str, int | str]:
        """The registry values the scripts read or write (absent values omitted)."""
        values: dict[str, int | str] = {}
        if self.spec.is_windows:
            values.update(
                {
                    f"{REG_CURRENT_VERSION}\\CurrentBuild": str(self.spec.build),
                    f"{REG_CURRENT_VERSION}\\UBR": self.spec.revision or 0,
                    f"{REG_CURRENT_VERSION}\\EditionID": self.spec.edition_id,
                    f"{REG_CURRENT_VERSION}\\ProductName": self.spec.os_sku,
                    f"{REG_CURRENT_VERSION}\\InstallationType": self.installation_type,
                }
            )
        if self.vbs_configured is not None:
            values[REG_VBS] = self.vbs_configured
        if self.licensing_override is not None:
            values[REG_LICENSING_OVERRIDE] = self.licensing_override
        if self.license_mutex:
            values[REG_LICENSE_MUTEX] = "1"
        return values

    def _installation_type(self) -> str:
        if not self.spec.is_windows:
            return ""
        if not self.spec.is_windows_server:
            return "Client"
        return "Server Core" if stable_unit(self._seed, "core", self.key) < 0.3 else "Server"

    def _hotfixes(self) -> tuple[str, ...]:
        """The KB of the baseline the machine runs (core/baselines.json). Two October 2025 updates share
        26100.6905: the installed KB, not the build, tells them apart."""
        from core.baselines import load_baselines

        if self.spec.build != 26100:
            return ()
        if self.spec.revision == 6905:
            wsus = stable_unit(self._seed, "kb6905", self.key) < 0.7
            return ("KB5070893",) if wsus else ("KB5070881",)
        return tuple(b.kb for b in load_baselines() if (b.build, b.revision) == (26100, self.spec.revision))

    def _initial_license_profile(self, started_at: datetime) -> LicenseProfile | None:
        spec = self.spec
        if not spec.is_windows or (spec.hotpatch != "Enabled" and not spec.esu_profile):
            return None
        enrolled = (started_at - timedelta(days=30)).replace(microsecond=0)
        features: list[ProductFeature] = []
        if spec.esu_profile:
            features.append(ProductFeature(ARC_MANAGEMENT_FEATURE, "Enabled", enrollment_date=enrolled))
        if spec.hotpatch == "Enabled":
            features.append(ProductFeature(HOTPATCH_FEATURE, "Enabled", enrollment_date=enrolled))
        esu_license = (
            f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
            f"/providers/Microsoft.HybridCompute/licenses/esu-{self.resource_group.lower()}"
            if spec.esu_profile
            else None
        )
        return LicenseProfile(
            location=self.location,
            tags={},
            software_assurance_customer=True if spec.esu_profile else None,
            esu_assigned_license=esu_license,
            product_type="WindowsServer",
            product_subscription=None,
            features=features,
            provisioning_state="Succeeded",
            provisioned_at=enrolled,
        )

    # --- the event queue -------------------------------------------------------------------

    def _schedule(self, at: datetime, kind: str, payload: Any = None) -> None:
        heapq.heappush(self._events, (at, next(self._event_sequence), kind, payload))

    def advance(self, now: datetime) -> None:
        """Apply every event due by ``now``, in time order."""
        events = self._events
        while events and events[0][0] <= now:
            at, _, kind, payload = heapq.heappop(events)
            getattr(self, "_on_" + kind)(at, payload)

    def _schedule_flap(self, started_at: datetime) -> None:
        faults = self._faults
        if self.agent_status != "Connected" or faults.agent_flap_rate <= 0:
            return
        if stable_unit(self._fault_seed, "flap", self.key) >= faults.agent_flap_rate:
            return
        begin = started_at + timedelta(
            minutes=stable_uniform(0, faults.agent_flap_window_minutes, self._fault_seed, "flap-at", self.key)
        )
        length = stable_uniform(*faults.agent_flap_minutes, self._fault_seed, "flap-minutes", self.key)
        self._schedule(begin, "flap_down")
        self._schedule(begin + timedelta(minutes=length), "flap_up")

    def _set_agent_status(self, status: str, at: datetime) -> None:
        if status != self.agent_status:
            self.agent_status = status
            self.last_status_change = at

    def _agent_back(self, at: datetime) -> None:
        """The agent reconnected: start waiting runs, settle waiting enablement."""
        for run in self.runs.values():
            if run.waiting_for_agent:
                run.waiting_for_agent = False
                self._schedule(at + timedelta(seconds=run.pickup_seconds), "run_start", run)
        feature = self.hotpatch_feature
        if feature is None or feature.status != "Enabling":
            return
        if feature.waiting_for == "agent":
            feature.waiting_for = None
            self._schedule(at, "hotpatch_settle", feature)
        elif feature.waiting_for == "licensing_fix" and self.licensing_fix_active:
            feature.waiting_for = None
            original = (feature.enrollment_date or at) + timedelta(minutes=self.spec.enable_minutes)
            self._schedule(max(at + timedelta(minutes=self.spec.enable_minutes), original), "hotpatch_settle", feature)

    def _on_flap_down(self, at: datetime, _: Any) -> None:
        if self.agent_status == "Connected" and not self.down:
            self._flapping = True
            self._set_agent_status("Disconnected", at)

    def _on_flap_up(self, at: datetime, _: Any) -> None:
        if self._flapping:
            self._flapping = False
            if not self.down:
                self._set_agent_status("Connected", at)
                self._agent_back(at)

    # --- reboots -----------------------------------------------------------------------------

    def _schedule_reboot(self, at: datetime) -> None:
        self.scheduled_reboot_at = at
        self._schedule(at, "shutdown", at)

    def _on_shutdown(self, at: datetime, planned_for: datetime) -> None:
        if self.scheduled_reboot_at != planned_for or self.down:
            return
        self.scheduled_reboot_at = None
        self.down = True
        self.reboots += 1
        self.himds = "Stopped"
        self._set_agent_status("Disconnected", at)
        for run in self.runs.values():
            if run.execution_state == "Running":
                run.result_lost = True  # the machine went down under it: nobody reports the result
        if self.spec.reboot_hangs:
            return
        minutes = self.spec.reboot_minutes
        faults = self._faults
        sequence = self.reboots
        if stable_unit(self._fault_seed, "slow-reboot", self.key, sequence) < faults.slow_reboot_rate:
            minutes += stable_uniform(
                *faults.slow_reboot_extra_minutes, self._fault_seed, "slow-reboot-minutes", self.key, sequence
            )
        self._schedule(at + timedelta(minutes=minutes), "boot")

    def _on_boot(self, at: datetime, _: Any) -> None:
        spec = self.spec
        self.down = False
        self._flapping = False
        self.himds = "Running"
        self.boot_times.append(at)
        vsm_can_run = spec.uefi and spec.secure_boot and spec.vsm_starts
        if self.vbs_configured == 1:
            self.vbs_status = 2 if vsm_can_run else 1
        else:
            self.vbs_status = 0
        self.licensing_fix_active = self.licensing_override == 1
        self.servicing_reboot_pending = False
        self._set_agent_status("Connected", at)
        self._agent_back(at)

    # --- Hotpatch and other product features -------------------------------------------------

    def _is_current(self, feature: ProductFeature) -> bool:
        profile = self.license_profile
        if profile is None:
            return False
        return feature is profile.product_subscription or any(f is feature for f in profile.features)

    def _on_hotpatch_settle(self, at: datetime, feature: ProductFeature) -> None:
        if not self._is_current(feature) or feature.status != "Enabling":
            return
        spec = self.spec
        if spec.enable_outcome == "stuck":
            return
        if not self.agent_reachable:
            feature.waiting_for = "agent"
            return
        if spec.enable_outcome == "fail":
            self._fail(feature, "HotpatchEnablementFailed", "Hotpatch enablement failed on the machine.")
        elif spec.enable_outcome == "action_required":
            # The license is granted; the machine reports what it needs before it can take hotpatches.
            feature.status = "Enabled"
            feature.waiting_for = None
            self.enablement_action_required = {
                "code": "HotpatchActionRequired",
                "message": "The machine must install the latest baseline update and restart before Hotpatch "
                           "can be enabled.",
            }
        elif not spec.hotpatch_capable:
            self._fail(
                feature,
                "HotpatchNotSupported",
                f"Hotpatch is not supported on {spec.os_sku} {spec.os_version}.",
            )
        elif self.vbs_status != 2:
            self._fail(
                feature,
                "VirtualSecureModeNotRunning",
                "Virtual Secure Mode (VSM) is not running on the machine. Enable VBS, restart, and try again.",
            )
        elif spec.licensing_bug and not self.licensing_fix_active and not spec.is_azure_edition:
            feature.waiting_for = "licensing_fix"  # the October 2025 issue: "in progress" until fixed
        else:
            feature.status = "Enabled"
            feature.waiting_for = None

    @staticmethod
    def _fail(feature: ProductFeature, code: str, message: str) -> None:
        feature.status = "Failed"
        feature.error = {"code": code, "message": message}
        feature.waiting_for = None

    def _on_feature_settle(self, at: datetime, payload: tuple[ProductFeature, str]) -> None:
        feature, target = payload
        if self._is_current(feature) and feature.status in ("Enabling", "Disabling"):
            feature.status = target

    def _feature_after(
        self, existing: ProductFeature | None, name: str, status: str | None, at: datetime, *, product: bool = False
    ) -> ProductFeature:
        """The feature after a write asking for ``status`` (Enable/Disable or a read-back value)."""
        wanted = (status or "").lower()
        if wanted in ("enable", "enabled", "enabling"):
            if existing is not None and existing.status in ENABLING_STATES:
                return existing
            feature = ProductFeature(name, "Enabling", enrollment_date=at)
            if product:
                self.payg_enrolled = True
                due = at + timedelta(minutes=self.spec.enable_minutes)
                self._schedule(due, "feature_settle", (feature, "Enabled"))
            elif name.lower() == HOTPATCH_FEATURE.lower():
                self._schedule(at + timedelta(minutes=self.spec.enable_minutes), "hotpatch_settle", feature)
            else:
                self._schedule(at + timedelta(seconds=FEATURE_SETTLE_SECONDS), "feature_settle", (feature, "Enabled"))
            return feature
        if wanted in ("disable", "disabled", "disabling"):
            if existing is None or existing.status in DISABLING_STATES:
                return existing or ProductFeature(name, "Disabled")
            feature = ProductFeature(name, "Disabling", enrollment_date=existing.enrollment_date, disenrollment_date=at)
            self._schedule(at + timedelta(seconds=FEATURE_SETTLE_SECONDS), "feature_settle", (feature, "Disabled"))
            return feature
        if existing is not None:
            return existing
        return ProductFeature(name, status if status in ("Unknown", "Failed") else "Unknown")

    def write_license_profile(
        self, method: str, change: LicenseProfileChange, body: dict[str, Any], at: datetime
    ) -> bool:
        """Apply a PUT (replace) or PATCH (merge) of ``licenseProfiles/default``; True if created.

        PUT replaces every writable property: what the body omits is gone, including the
        ESU license assignment and product features (the data-loss trap). PATCH is a JSON
        merge patch: omitted properties stay, ``null`` removes, and a ``productFeatures``
        array replaces the list (arrays are not merged by RFC 7386).
        """
        replace = method == "PUT"
        old = self.license_profile

        def keep(value: Any, previous: Any) -> Any:
            if value is ABSENT:
                return None if replace else previous
            return value

        previous_features = {f.name.lower(): f for f in old.features} if old else {}
        if change.features is ABSENT and not replace:
            features = list(old.features) if old else []
        else:
            requested = [] if change.features is ABSENT else change.features
            features = [
                self._feature_after(previous_features.get(name.lower()), name, status, at) for name, status in requested
            ]
        if change.product_subscription_status is ABSENT:
            product_subscription = None if replace or old is None else old.product_subscription
        else:
            product_subscription = self._feature_after(
                old.product_subscription if old else None, "", change.product_subscription_status, at, product=True
            )
        profile = LicenseProfile(
            location=keep(change.location, old.location if old else self.location) or self.location,
            tags=keep(change.tags, old.tags if old else {}) or {},
            software_assurance_customer=keep(
                change.software_assurance_customer, old.software_assurance_customer if old else None
            ),
            esu_assigned_license=keep(change.esu_assigned_license, old.esu_assigned_license if old else None),
            product_type=keep(change.product_type, old.product_type if old else None),
            product_subscription=product_subscription,
            features=features,
            provisioning_state="Creating" if old is None else "Updating",
            provisioned_at=at + timedelta(seconds=15),
        )
        kept = {f.name.lower() for f in features}
        self.license_profile = profile
        self.license_writes.append(
            LicenseWrite(
                method=method,
                at=at,
                body=body,
                dropped_features=tuple(f.name for f in (old.features if old else []) if f.name.lower() not in kept),
                dropped_esu_license=bool(old and old.esu_assigned_license and not profile.esu_assigned_license),
                dropped_software_assurance=bool(
                    old and old.software_assurance_customer is not None and profile.software_assurance_customer is None
                ),
            )
        )
        return old is None

    def delete_license_profile(self, at: datetime) -> bool:
        """Delete ``licenseProfiles/default``; True if there was one."""
        old = self.license_profile
        if old is None:
            return False
        self.license_writes.append(
            LicenseWrite(
                method="DELETE",
                at=at,
                body=None,
                dropped_features=tuple(f.name for f in old.features),
                dropped_esu_license=old.esu_assigned_license is not None,
                dropped_software_assurance=old.software_assurance_customer is not None,
            )
        )
        self.license_profile = None
        return True

    # --- Run Command ---------------------------------------------------------------------------

    def create_run(self, name: str, request: RunRequest, at: datetime) -> tuple[RunCommand, bool]:
        """Start a new execution under ``name``; returns it and whether the resource already existed."""
        sequence = len(self.run_history) + 1
        total = stable_uniform(20, 40, self._seed, "run-seconds", self.key, sequence)
        pickup = stable_uniform(2, 6, self._seed, "run-pickup", self.key, sequence)
        lost = stable_unit(self._fault_seed, "lost-run", self.key, sequence) < self._faults.lost_run_result_rate
        timeout = request.timeout_in_seconds or DEFAULT_RUN_TIMEOUT_SECONDS
        previous = self.runs.get(name.lower())
        run = RunCommand(
            name=name,
            sequence=sequence,
            request=request,
            created_at=at,
            replaced_existing=previous is not None,
            arm_deadline=at + timedelta(seconds=timeout + ARM_RUN_GRACE_SECONDS),
            pickup_seconds=pickup,
            duration_seconds=total - pickup,
            fault_lost_result=lost,
            tags=dict(request.tags),
        )
        self.runs[name.lower()] = run
        self.run_history.append(run)
        if self.agent_reachable:
            self._schedule(at + timedelta(seconds=pickup), "run_start", run)
        else:
            run.waiting_for_agent = True
        return run, previous is not None

    def delete_run(self, name: str, at: datetime) -> bool:
        run = self.runs.pop(name.lower(), None)
        if run is None:
            return False
        run.deleted = True
        if not run.terminal and not run.result_lost:
            run.execution_state = "Canceled"
            run.end_time = at
        return True

    def is_current_run(self, run: RunCommand) -> bool:
        return not run.deleted and self.runs.get(run.name.lower()) is run

    def _on_run_start(self, at: datetime, run: RunCommand) -> None:
        if not self.is_current_run(run) or run.execution_state != "Pending":
            return
        if not self.agent_reachable:
            run.waiting_for_agent = True
            return
        run.execution_state = "Running"
        run.start_time = at
        refusal = self.run_command_refusal()
        if refusal is not None:
            code, message = refusal
            run.execution_state = "Failed"
            run.execution_message = message
            run.error = message
            run.end_time = at
            run.provisioning_error = {"code": code, "message": message}
            return
        timeout = run.request.timeout_in_seconds
        if timeout is not None and 0 < timeout < run.duration_seconds:
            self._schedule(at + timedelta(seconds=timeout), "run_timeout", run)
        else:
            self._schedule(at + timedelta(seconds=run.duration_seconds), "run_finish", run)

    def run_command_refusal(self) -> tuple[str, str] | None:
        """Why the agent refuses the Run Command extension, as its configuration says (None: it runs)."""
        spec = self.spec
        publisher, handler = RUN_COMMAND_HANDLER
        name = f"'{publisher}.{handler}'"
        major, minor = (int(p) for p in self.agent_version.split(".")[:2])
        if (major, minor) < MIN_RUN_COMMAND_AGENT:
            return ("AgentVersionNotSupported",
                    f"Run Command requires Connected Machine agent 1.33 or later; the agent is {self.agent_version}.")
        if spec.agent_config_mode == "monitor":
            return ("ExtensionBlocked", f"Extension {name} is not allowed: the agent runs in monitor mode "
                                        "(azcmagent config config.mode).")
        if not spec.extensions_enabled:
            return ("ExtensionsDisabled", "Extensions are disabled on the Connected Machine agent "
                                          "(azcmagent config extensions.enabled).")
        if RUN_COMMAND_EXTENSION.lower() in (e.lower() for e in spec.extensions_blocklist):
            return ("ExtensionBlocked", f"Extension {name} is blocked by the Connected Machine agent's "
                                        "extensions.blocklist configuration (azcmagent config).")
        if spec.extensions_allowlist and RUN_COMMAND_EXTENSION.lower() not in (
                e.lower() for e in spec.extensions_allowlist):
            return ("ExtensionBlocked", f"Extension {name} is not in the Connected Machine agent's "
                                        "extensions.allowlist configuration (azcmagent config).")
        if spec.run_command_fails:  # a failure ARM's view of the agent does not foresee
            return ("ExtensionOperationFailed", f"Extension {name} failed to start: the handler exited with an error.")
        return None

    def _on_run_timeout(self, at: datetime, run: RunCommand) -> None:
        if self.is_current_run(run) and run.execution_state == "Running" and not run.result_lost:
            run.execution_state = "TimedOut"
            run.execution_message = f"The script did not finish within {run.request.timeout_in_seconds} seconds."
            run.end_time = at

    def _on_run_finish(self, at: datetime, run: RunCommand) -> None:
        if not self.is_current_run(run) or run.execution_state != "Running" or run.result_lost:
            return
        outcome, reporter_stopped = self._execute(run, at)
        if reporter_stopped or run.fault_lost_result:
            run.result_lost = True  # the script ran, its result never reaches ARM
            run.unreported = outcome
            return
        run.execution_state = "Succeeded" if outcome.succeeded else "Failed"
        run.exit_code = outcome.exit_code
        run.output = keep_last_4kb(outcome.output)
        run.error = keep_last_4kb(outcome.error)
        run.end_time = at

    def _execute(self, run: RunCommand, at: datetime) -> tuple[ScriptOutcome, bool]:
        """Run the script against the machine; returns its outcome and whether it stopped himds."""
        script = run.request.script_name
        if script is None:
            return ScriptOutcome(0), False
        if not self.spec.is_windows:
            # A PowerShell script handed to the Linux handler: bash stops at the param() block.
            return ScriptOutcome(2, "", "line 3: syntax error near unexpected token `newline'\n"), False
        try:
            bound = bind_parameters(script, [*run.request.parameters, *run.request.protected_parameters])
            return self._run_script(script, bound, at)
        except ScriptFailure as failure:
            return ScriptOutcome(1, "", f"{failure}\n"), False

    def _run_script(self, script: str, bound: dict[str, Any], at: datetime) -> tuple[ScriptOutcome, bool]:
        request_id = bound["RequestId"]
        if script == READINESS:
            wanted = {kb.strip().upper() for kb in bound["RelevantKbs"].split(",") if kb.strip()}
            return ScriptOutcome(0, compact_json(self.readiness_facts(request_id, wanted))), False
        assert script == APPLY_CHANGES
        delay = bound["RebootDelaySeconds"]
        if delay < 0:
            raise ScriptFailure("RebootDelaySeconds must be >= 0")
        vbs_configured = None
        if bound["EnableVsm"] == 1:
            self.vbs_configured = vbs_configured = 1
        if self.scheduled_reboot_at is not None:
            # shutdown.exe refuses a second pending restart (ERROR_SHUTDOWN_IS_SCHEDULED).
            raise ScriptFailure("shutdown.exe failed with exit code 1190")
        self._schedule_reboot(at + timedelta(seconds=delay))
        override, mutex_removed, stopped = None, False, False
        if bound["ApplyWorkaround"] == 1:
            self.himds = "Stopped"
            self.licensing_override = override = 1
            mutex_removed = self.license_mutex
            self.license_mutex = False
            stopped = True
        document = {
            "v": 1,
            "script": APPLY_CHANGES,
            "request_id": request_id,
            "vbs_configured": vbs_configured,
            "licensing_override": override,
            "mutex_removed": mutex_removed,
            "reboot_in_s": delay,
            "requested_at": _z(at),
        }
        return ScriptOutcome(0, compact_json(document)), stopped

    def readiness_facts(self, request_id: str = "", relevant_kbs: set[str] | None = None) -> dict[str, Any]:
        """Exactly what ``readiness.ps1`` prints, as a dict in its key order (``hotfixes``: the installed KBs
        among ``relevant_kbs``, the script's parameter; None: every one)."""
        spec = self.spec
        return {
            "v": 1,
            "script": READINESS,
            "request_id": request_id,
            "build": spec.build or 0,
            "ubr": spec.revision or 0,
            "edition_id": spec.edition_id,
            "product_name": spec.os_sku,
            "installation_type": self.installation_type,
            "vbs_status": self.vbs_status,
            "vbs_configured": self.vbs_configured,
            "firmware": "UEFI" if spec.uefi else "BIOS",
            "firmware_signal": "GetFirmwareType",
            "secure_boot": spec.uefi and spec.secure_boot,
            "licensing_override": self.licensing_override,
            "license_mutex": self.license_mutex,
            "himds": self.himds,
            "last_boot": _z(self.last_boot),
            "hotfixes": [kb for kb in self.hotfixes if relevant_kbs is None or kb in relevant_kbs],
            "reboot_pending": self.pending_reboot_reasons,
        }

    def hotpatchable(self, at: datetime) -> bool:
        """Whether this month's update installs as a hotpatch: enrolled on both levels, VSM running, the feature
        license sound, on the latest baseline released by ``at`` (core/baselines.json), no reboot pending."""
        from core.baselines import BaselineFlag, load_baselines, standing

        feature = self.hotpatch_feature
        spec = self.spec
        return bool(
            spec.hotpatch_capable and not spec.is_azure_edition and feature is not None
            and feature.status == "Enabled" and self.enablement_action_required is None and self.vbs_status == 2
            and (not spec.licensing_bug or self.licensing_fix_active) and not self.pending_reboot_reasons
            and standing(spec.build, spec.revision, self.hotfixes, load_baselines(), at.date()).flag == BaselineFlag.ON
        )

    def install_patches(self, at: datetime, reboot_setting: str, exclude_reboot_kbs: bool) -> dict[str, Any]:
        """installPatches: a hotpatchable machine installs the month's hotpatches (once) without a reboot;
        otherwise the month's update needs a reboot: left pending when excluded or ``Never``, else installed
        with the reboot it needs."""
        if self.hotpatchable(at):
            month = at.strftime("%Y-%m")
            installed = 0 if month in self.hotpatched_months else 2
            self.hotpatched_months.add(month)
            return {"installed": installed, "pending": 0, "excluded": 0, "reboot": "NotNeeded"}
        if exclude_reboot_kbs or reboot_setting == "Never":
            return {"installed": 0, "pending": 1, "excluded": int(exclude_reboot_kbs), "reboot": "Required"}
        if self.scheduled_reboot_at is None:
            self._schedule_reboot(at + timedelta(seconds=60))
        return {"installed": 1, "pending": 0, "excluded": 0, "reboot": "Started"}

    @property
    def pending_reboot_reasons(self) -> list[str]:
        """The readiness script's pending-reboot signals: ours (a scheduled restart), Windows' own servicing."""
        return ((["arc_hotpatch"] if self.scheduled_reboot_at is not None else [])
                + (["component_servicing"] if self.servicing_reboot_pending else []))
