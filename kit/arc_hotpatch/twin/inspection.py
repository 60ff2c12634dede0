"""Read-only views of simulated machines for tests and reports (Python, not HTTP)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .arm import license_profile_resource
from .machine import LicenseWrite, RunCommand, SimulatedMachine


@dataclass(frozen=True)
class RunSnapshot:
    """One Run Command execution as the machine lived it (including results ARM never got)."""

    name: str
    script: str | None  # arc-hotpatch script name, None for any other script
    parameters: dict[str, str]
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    execution_state: str
    exit_code: int | None
    output: str
    error: str
    result_lost: bool  # the script ran (or was cut short) but its result never reached ARM
    unreported_output: str | None
    deleted: bool


@dataclass(frozen=True)
class MachineSnapshot:
    """Everything a test may want to know about one machine at one moment."""

    resource_id: str
    name: str
    subscription_id: str
    resource_group: str
    agent_status: str
    last_status_change: datetime
    himds: str
    down: bool
    registry: dict[str, int | str]
    vbs_status: int
    vbs_configured: int | None
    licensing_override: int | None
    license_mutex: bool
    licensing_fix_active: bool
    boot_times: tuple[datetime, ...]
    reboots: int  # reboots since the twin started
    scheduled_reboot_at: datetime | None
    hotpatch_status: str | None  # the Hotpatch product feature's subscriptionStatus, None if absent
    license_profile: dict[str, Any] | None  # as GET licenseProfiles/default returns it
    license_writes: tuple[LicenseWrite, ...]
    payg_enrolled: bool  # someone set the top-level productProfile.subscriptionStatus (billed)
    runs: tuple[RunSnapshot, ...]

    @property
    def last_boot(self) -> datetime:
        return self.boot_times[-1]

    @property
    def boot_count(self) -> int:
        return len(self.boot_times)


def _run_snapshot(run: RunCommand) -> RunSnapshot:
    parameters = {p["name"]: p["value"] for p in run.request.parameters}
    return RunSnapshot(
        name=run.name,
        script=run.request.script_name,
        parameters=parameters,
        created_at=run.created_at,
        started_at=run.start_time,
        ended_at=run.end_time,
        execution_state=run.execution_state,
        exit_code=run.exit_code,
        output=run.output,
        error=run.error,
        result_lost=run.result_lost,
        unreported_output=run.unreported.output if run.unreported else None,
        deleted=run.deleted,
    )


def snapshot(machine: SimulatedMachine, now: datetime) -> MachineSnapshot:
    """The machine as of ``now`` (the caller has advanced it)."""
    feature = machine.hotpatch_feature
    return MachineSnapshot(
        resource_id=machine.resource_id,
        name=machine.name,
        subscription_id=machine.subscription_id,
        resource_group=machine.resource_group,
        agent_status=machine.agent_status,
        last_status_change=machine.last_status_change,
        himds=machine.himds,
        down=machine.down,
        registry=machine.registry,
        vbs_status=machine.vbs_status,
        vbs_configured=machine.vbs_configured,
        licensing_override=machine.licensing_override,
        license_mutex=machine.license_mutex,
        licensing_fix_active=machine.licensing_fix_active,
        boot_times=tuple(machine.boot_times),
        reboots=machine.reboots,
        scheduled_reboot_at=machine.scheduled_reboot_at,
        hotpatch_status=feature.status if feature is not None else None,
        license_profile=license_profile_resource(machine, now) if machine.license_profile else None,
        license_writes=tuple(machine.license_writes),
        payg_enrolled=machine.payg_enrolled,
        runs=tuple(_run_snapshot(run) for run in machine.run_history),
    )
