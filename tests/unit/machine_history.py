"""Histories of the per-machine orchestrator: a ready machine, and activity results as the activities return them.

The orchestrator works in phases, one execution each (assess, then change, then enable): a history of a later
phase starts where the one before continued as new (:meth:`MachineHistory.next_phase`), with what it carried.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from core import contracts
from core.baselines import load_baselines
from core.contracts import MachineInput, MachineRead, PatchResult, ScriptResult
from core.facts import MachineFacts
from core.ledger import LEDGER_READ, LEDGER_WRITE_ALL
from core.policy import Policy
from core.readiness import Readiness

from .history_builder import T0, History, State

SUBSCRIPTION = "11111111-2222-3333-4444-555555555555"
MACHINE_ID = (
    f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg-hotpatch/providers/Microsoft.HybridCompute/machines/srv-01"
)
ARM = "https://management.azure.com"
SECONDS = timedelta(seconds=1)
# Run Command: the first look at a started script, then the next ones; a reboot's first check after its request.
FIRST_LOOK, POLL, REBOOT_FIRST_CHECK = 40 * SECONDS, 20 * SECONDS, 420 * SECONDS

# A ready machine: Connected Windows Server 2025 Datacenter at the October 2025 baseline, Hotpatch not enabled.
READY_FACTS = MachineFacts(
    id=MACHINE_ID, name="srv-01", subscription_id=SUBSCRIPTION, resource_group="rg-hotpatch", status="Connected",
    os_type="windows", os_sku="Windows Server 2025 Datacenter", os_version_text="10.0.26100.6899",
    location="westeurope", hotpatch_feature_status="Disabled",
    license_features=({"name": "Hotpatch", "subscriptionStatus": "Disabled"},),
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
NEEDS_WORKAROUND = replace(READY, licensing_override=None, license_mutex=True)

RUNNING = ScriptResult(ScriptResult.RUNNING)
# apply_changes' own report (the orchestrator verifies the reboot on the machine instead).
APPLIED = ScriptResult(ScriptResult.SUCCEEDED, result={
    "script": "apply_changes", "v": 1, "reboot_in_s": 60, "requested_at": "2025-11-03T09:02:00Z"})


def policy(**changes: Any) -> Policy:
    return replace(Policy(reboot_policy="auto", arm_endpoint=ARM), **changes)


def arm_facts(**changes: Any) -> MachineFacts:
    return replace(READY_FACTS, **changes)


def readiness(**changes: Any) -> Readiness:
    return replace(READY, **changes)


def failed(error: str) -> ScriptResult:
    return ScriptResult(ScriptResult.FAILED, error=error)


def machine_input(machine_policy: Policy | None = None, **fields: Any) -> MachineInput:
    return MachineInput(MACHINE_ID, machine_policy or policy(), "rollout-1", **fields)


class MachineHistory(History):
    """A ``machine_orchestrator`` history; each method is one step the orchestrator took and its answer."""

    def __init__(self, machine_policy: Policy | None = None, *, start: datetime = T0, **fields: Any) -> None:
        """``fields``: the rest of the ``MachineInput`` (``record_under``, ``assess_only``, ``carry``)."""
        super().__init__(contracts.MACHINE_ORCHESTRATOR, machine_input(machine_policy, **fields).to_json(),
                         start=start)
        self.requested_at: datetime | None = None  # when it started the apply_changes script (its first attempt)
        # The assess phase reads the ledger (an earlier run's unsettled change) before its first readiness run.
        self.ledger_due = fields.get("carry") is None and not (machine_policy or policy()).dry_run

    def next_phase(self) -> MachineHistory:
        """The next execution's history: the orchestrator must continue as new here; it starts with that input."""
        carried = continued(self.replay())
        return MachineHistory(carried.policy, start=self.now, record_under=carried.record_under,
                              assess_only=carried.assess_only, carry=carried.carry)

    def read_machine(self, facts: MachineFacts | None = READY_FACTS, baseline: str = "on") -> MachineHistory:
        read = MachineRead(found=True, facts=facts.to_json(), baseline=baseline) if facts else MachineRead(False)
        self.activity(contracts.GET_MACHINE, read)
        return self

    def hotpatch_status(self, status: str) -> MachineHistory:
        """A machine read while it waits for enablement: its Hotpatch feature's status."""
        return self.read_machine(arm_facts(hotpatch_feature_status=status))

    def script(self, name: str, *reads: ScriptResult, start: ScriptResult = RUNNING,
               timeout_s: float = 600) -> MachineHistory:
        """One attempt of script ``name``: ``start_script`` answers ``start``; while it runs, a timer and a
        ``read_script`` per answer in ``reads``: the first look 40 s after the start, then every 20 s (none
        after the run's deadline, ``timeout_s`` after the start)."""
        assert start == RUNNING or not reads, "a script that did not start is not read"
        if self.ledger_due and name == "readiness":
            self.ledger_read()
        self.activity(contracts.START_SCRIPT, start, label=f"start_script:{name}")
        deadline, look = self.now + timeout_s * SECONDS, FIRST_LOOK
        for read in reads:
            self.timer(min(self.now + look, deadline))
            self.activity(contracts.READ_SCRIPT, read, label=f"read_script:{name}")
            look = POLL
        return self

    def assess_patches(self, reboot_pending: bool | None = False) -> MachineHistory:
        """Update Manager's assessment: started (202), read once a minute later with ``reboot_pending`` (None: it
        failed)."""
        operation = f"{ARM}/subscriptions/{SUBSCRIPTION}/providers/Microsoft.HybridCompute/locations/westeurope/" \
                    "operationResults/op-1"
        self.activity(contracts.START_ASSESSMENT, PatchResult(PatchResult.RUNNING, operation_url=operation))
        self.timer(self.now + 60 * SECONDS)
        result = (PatchResult(PatchResult.SUCCEEDED, reboot_pending=reboot_pending)
                  if reboot_pending is not None else PatchResult(PatchResult.FAILED, error="Failed"))
        self.activity(contracts.READ_PATCH_OPERATION, result)
        return self

    def ledger_read(self, entries: list[dict[str, Any]] | None = None) -> MachineHistory:
        """The assess phase's read of the machine's ledger entries (none by default)."""
        self.ledger_due = False
        self.activity(LEDGER_READ, entries or [], took=timedelta(0))  # no time: the other steps' times stay
        return self

    def ledger_written(self, count: int = 1) -> MachineHistory:
        """Entries written to the audit ledger (before a change, and after its outcome)."""
        self.activity(LEDGER_WRITE_ALL, count, took=timedelta(0))
        return self

    def run_readiness(self, report: Readiness = READY, baseline: str = "on") -> MachineHistory:
        report_json = report.to_json()
        # As the activity judges it: the revision against the baselines data's licensing issue range.
        affected = load_baselines().licensing_issue.affects(report.ubr)
        return self.script("readiness", ScriptResult(ScriptResult.SUCCEEDED, result=report_json, baseline=baseline,
                                                     licensing_issue=affected))

    def apply_changes(self, *reads: ScriptResult, start: ScriptResult = RUNNING) -> MachineHistory:
        """An apply_changes attempt (its run timeout is 150 s): by default it reports at the first look."""
        if self.requested_at is None:
            self.ledger_written()  # the changes, requested
            self.requested_at = self.now
        if start == RUNNING and not reads:
            reads = (APPLIED,)
        return self.script("apply_changes", *reads, start=start, timeout_s=150)

    def backoff(self, seconds: float) -> MachineHistory:
        """The timer before a failed script's next attempt."""
        self.timer(self.now + seconds * SECONDS)
        return self

    def rebooted(self, report: Readiness = READY, facts: MachineFacts = READY_FACTS) -> MachineHistory:
        """The first check after the reboot request: the machine is back, booted after the request."""
        assert self.requested_at is not None, "no apply_changes in this history"
        self.timer(self.requested_at + REBOOT_FIRST_CHECK).read_machine(facts)
        return self.run_readiness(booted(self, report)).ledger_written()  # what the machine shows: done

    def enable_hotpatch(self) -> MachineHistory:
        self.ledger_written()  # enable_hotpatch, requested
        self.activity(contracts.ENABLE_HOTPATCH, {"operation": "patch"})
        return self

    def escalate(self) -> MachineHistory:
        self.activity(contracts.ESCALATE, {"webhook": "not_configured"})
        return self

    def recorded(self) -> MachineHistory:
        """The ``rollout_record`` sub-orchestration that records the outcome for the window."""
        self.sub_orchestration(contracts.ROLLOUT_RECORD)
        return self


def booted(h: MachineHistory, report: Readiness = READY) -> Readiness:
    """``report`` as the machine gives it once rebooted: its boot time is 90 s after the reboot request."""
    assert h.requested_at is not None
    return replace(report, last_boot=(h.requested_at + 90 * SECONDS).strftime("%Y-%m-%dT%H:%M:%SZ"))


def continued(state: State) -> MachineInput:
    """The input the orchestrator continued as new with (it must have, and taken no other step after)."""
    assert state.error is None, state.error
    assert state.is_done and state.new_labels == ["continue_as_new"], f"did not continue as new: {state.new_labels}"
    return MachineInput.from_json(state.continued_with)


def outcome(state: State) -> tuple[str, str, list[str], int]:
    """The finished orchestration's (state, reason, actions, reboots)."""
    assert state.error is None, state.error
    assert state.is_done, f"not done; waiting for {state.new_labels}"
    assert state.continued_with is None, "it continued as new"
    row = state.output
    return row["state"], row["reason"], row["actions"], row["reboots"]
