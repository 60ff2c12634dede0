"""Drive a twin the way the app will: through the real SDK clients from the client factory."""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from azure.core.exceptions import ResourceNotFoundError
from azure.mgmt.hybridcompute import HybridComputeManagementClient, models

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.twin import FleetTwin
from arc_hotpatch.twin.polling import lro_polling
from core.azure_clients import ArmConnection, StaticTokenCredential, hybrid_compute_client

SCRIPTS_DIR = Path(__file__).resolve().parents[2] / "activities" / "scripts"
SCRIPT_NAMES = ("readiness", "apply_changes")
_names = itertools.count(1)


def script_text(name: str) -> str:
    return (SCRIPTS_DIR / f"{name}.ps1").read_text(encoding="utf-8")


def apply_changes_parameters(
    request_id: str, *, enable_vsm: int = 0, apply_workaround: int = 0, delay_s: int = 60
) -> dict[str, str]:
    """The Run Command parameters of ``apply_changes.ps1``."""
    return {
        "RequestId": request_id,
        "EnableVsm": str(enable_vsm),
        "ApplyWorkaround": str(apply_workaround),
        "RebootDelaySeconds": str(delay_s),
    }


@dataclass
class TwinHarness:
    twin: FleetTwin
    clock: VirtualClock
    records: list[Any]
    connection: ArmConnection = field(init=False)

    def __post_init__(self) -> None:
        assert self.twin.base_url is not None
        self.connection = ArmConnection(self.twin.base_url, StaticTokenCredential("test-token"),
                                        self.twin.ca_file or "")

    @property
    def url(self) -> str:
        assert self.twin.base_url is not None
        return self.twin.base_url

    def client(self, subscription: int = 0) -> HybridComputeManagementClient:
        return hybrid_compute_client(self.connection, self.twin.subscription_ids[subscription])

    def polling(self, wait: bool = True) -> Any:
        """``polling=`` for a ``begin_*`` call that waits on the twin (or False: don't wait, as the activities do)."""
        return lro_polling(self.url) if wait else False

    def sleep(self, seconds: float) -> None:
        """Let ``seconds`` of virtual time pass (the clock driver advances the clock)."""
        self.clock.sleep(seconds)

    def lro_result(self, begin: Callable[..., Any], *, within_s: float) -> Any:
        """Run a ``begin_*`` call to its result, polled in this thread (``polling()``), within ``within_s`` virtual
        seconds. A poller thread of its own would race: while its request is in flight, this thread's waits would
        run the virtual clock past the operation's end before the SDK saw it."""
        started = self.clock.now()
        poller = begin(polling=self.polling())
        waited = (self.clock.now() - started).total_seconds()
        assert poller.done() and waited <= within_s, f"not done within {within_s:.0f} virtual seconds ({waited:.0f})"
        return poller.result()

    def wait_for(self, condition: Callable[[], bool], *, within_s: float, step_s: float = 30) -> float:
        """Poll ``condition`` every ``step_s`` virtual seconds; returns the virtual seconds it took."""
        start = self.clock.now()
        while not condition():
            waited = (self.clock.now() - start).total_seconds()
            assert waited <= within_s, f"condition still false after {waited:.0f} virtual seconds"
            self.sleep(step_s)
        return (self.clock.now() - start).total_seconds()


@dataclass
class MachineDriver:
    """One machine through the SDK: scripts, license profile, status."""

    harness: TwinHarness
    name: str
    resource_group: str = "rg-arc-servers"
    subscription: int = 0

    @property
    def client(self) -> HybridComputeManagementClient:
        return self.harness.client(self.subscription)

    def get(self, instance_view: bool = True) -> models.Machine:
        expand = "instanceView" if instance_view else None
        return self.client.machines.get(self.resource_group, self.name, expand=expand)

    @property
    def location(self) -> str:
        return self.get(instance_view=False).location

    def run_body(self, script: str, parameters: dict[str, str] | None = None, **properties: Any) -> dict[str, Any]:
        text = script_text(script) if script in SCRIPT_NAMES else script
        return {
            "location": self.location,
            "properties": {
                "source": {"script": text},
                "parameters": [{"name": k, "value": v} for k, v in (parameters or {}).items()],
                **properties,
            },
        }

    def _put(
        self, script: str, parameters: dict[str, str] | None, name: str | None, polling: bool, **properties: Any
    ) -> tuple[str, Any]:
        name = name or f"{script if script in SCRIPT_NAMES else 'custom'}-{next(_names)}"
        body = self.run_body(script, parameters, **properties)
        poller = self.client.machine_run_commands.begin_create_or_update(
            self.resource_group, self.name, name, body, polling=self.harness.polling(polling)
        )
        return name, poller

    def start_run(
        self, script: str, parameters: dict[str, str] | None = None, name: str | None = None, **properties: Any
    ) -> str:
        """PUT a run command without waiting for it (``polling=False``); returns its name."""
        return self._put(script, parameters, name, False, **properties)[0]

    def run(self, script: str, parameters: dict[str, str] | None = None, **properties: Any) -> models.MachineRunCommand:
        """PUT a run command and let the SDK's LRO poller wait for it (on the virtual clock)."""
        return self._put(script, parameters, None, True, **properties)[1].result()

    def run_view(self, name: str) -> models.MachineRunCommandInstanceView:
        run = self.client.machine_run_commands.get(self.resource_group, self.name, name)
        return run.properties.instance_view

    def readiness(self) -> dict[str, Any]:
        result = self.run("readiness", {"RequestId": "readiness"})
        view = result.properties.instance_view
        assert view.execution_state == "Succeeded", view
        return json.loads(view.output)

    def apply_changes(self, delay_s: int = 60, enable_vsm: int = 0, request_id: str = "apply") -> dict[str, Any]:
        """Run ``apply_changes`` without the workaround (which loses the result); returns its output."""
        parameters = apply_changes_parameters(request_id, enable_vsm=enable_vsm, delay_s=delay_s)
        return json.loads(self.run("apply_changes", parameters).properties.instance_view.output)

    def status(self) -> str:
        status = self.get(instance_view=False).properties.status
        return getattr(status, "value", status)  # the SDK returns its str-enum for known values

    def wait_back_after(self, reboot_output: dict[str, Any], within_s: float = 3600) -> dict[str, Any]:
        """Wait until the agent reconnected after the reboot request, then return fresh readiness facts."""
        requested = datetime.fromisoformat(reboot_output["requested_at"])

        def reconnected() -> bool:
            properties = self.get(instance_view=False).properties
            return properties.status == "Connected" and properties.last_status_change > requested

        self.harness.wait_for(reconnected, within_s=within_s)
        facts = self.readiness()
        assert facts["last_boot"] > reboot_output["requested_at"]
        return facts

    # --- license profile: GET, merge our one feature, write (what the app must do) --------------

    def license_profile(self) -> models.LicenseProfile | None:
        try:
            return self.client.license_profiles.get(self.resource_group, self.name)
        except ResourceNotFoundError:
            return None

    def enable_hotpatch(self, method: str = "PUT") -> models.LicenseProfile:
        current = self.license_profile()
        features = []
        if current is not None and current.properties and current.properties.product_profile:
            features = [
                {"name": f.name, "subscriptionStatus": f.subscription_status}
                for f in current.properties.product_profile.product_features or []
                if f.name.lower() != "hotpatch"
            ]
        features.append({"name": "Hotpatch", "subscriptionStatus": "Enable"})
        properties: dict[str, Any] = {"productProfile": {"productType": "WindowsServer", "productFeatures": features}}
        if current is not None and current.properties:
            if current.properties.esu_profile and current.properties.esu_profile.assigned_license:
                properties["esuProfile"] = {"assignedLicense": current.properties.esu_profile.assigned_license}
            if current.properties.software_assurance:
                properties["softwareAssurance"] = dict(current.properties.software_assurance)
        if method == "PUT":
            body = {"location": self.location, "properties": properties}
            poller = self.client.license_profiles.begin_create_or_update(
                self.resource_group, self.name, body, polling=self.harness.polling()
            )
        else:
            poller = self.client.license_profiles.begin_update(
                self.resource_group, self.name, {"properties": properties}, polling=self.harness.polling()
            )
        return poller.result()

    def hotpatch_status(self) -> tuple[str | None, str]:
        """(Hotpatch feature subscriptionStatus or None, patchSettings hotpatchEnablementStatus)."""
        machine = self.get()
        profile = machine.properties.license_profile
        features = (profile.product_profile.product_features or []) if profile and profile.product_profile else []
        feature = next((f.subscription_status for f in features if f.name == "Hotpatch"), None)
        settings = machine.properties.os_profile.windows_configuration.patch_settings
        return feature, settings.status.hotpatch_enablement_status
