"""Histories of the per-machine orchestrator: a ready machine, and activity results as the activities return them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from core import contracts
from core.contracts import MachineInput, MachineRead, ScriptResult
from core.facts import MachineFacts
from core.policy import Policy
from core.readiness import Readiness

from .history_builder import History, State

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
MACHINE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-hotpatch/providers/Microsoft.HybridCompute/machines/srv-01"
)
ARM = "https://management.azure.com"

# A ready machine: Connected Windows Server 2025 Datacenter at the October 2025 baseline, Hotpatch not enabled.
READY_FACTS = MachineFacts(
    id=MACHINE_ID, name="srv-01", subscription_id=SUBSCRIPTION, resource_group="rg-hotpatch", status="Connected",
    os_type="windows", os_sku="Windows Server 2025 Datacenter", os_version_text="10.0.26100.6899",
    location="westeurope", hotpatch_feature_status="Disabled",
)
# Its readiness script output (as the twin prints it): VSM running, the licensing override already set.
READY = Readiness(
    build=26100, ubr=6899, edition_id="ServerDatacenter", product_name="Windows Server 2025 Datacenter",
    installation_type="Server", vbs_status=2, vbs_configured=1, firmware="UEFI", secure_boot=True,
    licensing_override=1, license_mutex=False, himds="Running", last_boot="2025-11-01T04:00:00Z",
    hotfixes=("KB5066835",),
)
# VSM off and the licensing issue present: the reboot path (enable_vsm + licensing_workaround + one reboot).
NEEDS_BOTH = replace(READY, vbs_status=0, vbs_configured=0, licensing_override=None, license_mutex=True)
NEEDS_VSM = replace(READY, vbs_status=0, vbs_configured=0)


def policy(**changes: Any) -> Policy:
    return replace(Policy(reboot_policy="auto", arm_endpoint=ARM), **changes)


def arm_facts(**changes: Any) -> MachineFacts:
    return replace(READY_FACTS, **changes)


def readiness(**changes: Any) -> Readiness:
    return replace(READY, **changes)


class MachineHistory(History):
    """A ``machine_orchestrator`` history; each method is one activity the orchestrator called and its result."""

    def __init__(self, machine_policy: Policy | None = None, rollout_id: str = "rollout-1") -> None:
        machine_input = MachineInput(MACHINE_ID, machine_policy or policy(), rollout_id)
        super().__init__(contracts.MACHINE_ORCHESTRATOR, machine_input.to_json())

    def read_machine(self, facts: MachineFacts | None = READY_FACTS, baseline: str = "on") -> MachineHistory:
        read = MachineRead(found=True, facts=facts.to_json(), baseline=baseline) if facts else MachineRead(False)
        self.activity(contracts.GET_MACHINE, read)
        return self

    def run_readiness(self, report: Readiness = READY, baseline: str = "on") -> MachineHistory:
        result = ScriptResult(ScriptResult.SUCCEEDED, result=report.to_json(), baseline=baseline)
        self.activity(contracts.RUN_SCRIPT, result)
        return self

    def run_script(self, status: str = ScriptResult.SUCCEEDED, error: str = "") -> MachineHistory:
        """An action script's (or a failed readiness run's) result."""
        result = {"ok": True} if status == ScriptResult.SUCCEEDED else None
        self.activity(contracts.RUN_SCRIPT, ScriptResult(status, result=result, error=error))
        return self

    def enable_hotpatch(self) -> MachineHistory:
        self.activity(contracts.ENABLE_HOTPATCH, {"operation": "put", "status": "Enabling"})
        return self

    def hotpatch_status(self, status: str | None) -> MachineHistory:
        self.activity(contracts.GET_HOTPATCH_STATUS, status)
        return self

    def escalate(self) -> MachineHistory:
        self.activity(contracts.ESCALATE, {"webhook": "not_configured"})
        return self


def outcome(state: State) -> tuple[str, str, list[str], int]:
    """The finished orchestration's (state, reason, actions, reboots)."""
    assert state.error is None, state.error
    assert state.is_done, f"not done; waiting for {state.new_labels}"
    row = state.output
    return row["state"], row["reason"], row["actions"], row["reboots"]
