"""Read-only views of simulated machines for tests and reports: Python snapshots, and the JSON
truth the twin serves at ``GET /_twin/machines/{name}`` (see ``machine_truth``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .arm import iso, license_profile_resource
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
    hotfixes: tuple[str, ...] = ()  # the KBs installed (what Get-HotFix would list of the relevant ones)

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
        hotfixes=tuple(machine.hotfixes),
    )


def machine_truth(machine: SimulatedMachine, now: datetime) -> dict[str, Any]:
    """What the simulated machine really is and did, as ``GET /_twin/machines/{name}`` returns it.

    This is the machine's own truth, not what ARM reports (a lost Run Command result or a
    disconnected agent does not hide anything here), so "rebooted exactly once" is checkable
    from outside the app:

    - ``boots``: the ISO UTC times (``...Z``) of every boot the machine completed since the
      twin started, oldest first; ``boot_count`` = ``len(boots)``, i.e. the number of
      reboots that brought the machine back up since the twin started (0: never rebooted).
      The boot that was current when the twin started is ``booted_at_start``, not counted.
    - ``reboots_started``: shutdowns since the twin started, including a reboot still in
      progress or one that hangs (``down`` is then true); ``boot_count`` <= ``reboots_started``.
    - ``pending_reboot``: a reboot is scheduled (``shutdown /r /t N`` issued, not yet begun);
      ``scheduled_reboot_at`` is when.
    - ``vsm``: ``status`` as Win32_DeviceGuard reports it (2 = running), ``configured`` the
      ``EnableVirtualizationBasedSecurity`` registry value (null when absent).
    - ``hotpatch_status``: the Hotpatch product feature's status (null: no such feature);
      ``license_profile`` the license profile as ARM returns it (null when there is none);
      ``payg_enrolled``: the top-level ``productProfile.subscriptionStatus`` was set (billed).
    """
    spec = machine.spec
    feature = machine.hotpatch_feature
    return {
        "id": machine.resource_id,
        "name": machine.name,
        "subscription_id": machine.subscription_id,
        "resource_group": machine.resource_group,
        "now": iso(now),
        "boot_count": len(machine.boot_times) - 1,
        "boots": [iso(moment) for moment in machine.boot_times[1:]],
        "booted_at_start": iso(machine.boot_times[0]),
        "last_boot": iso(machine.last_boot),
        "reboots_started": machine.reboots,
        "down": machine.down,
        "pending_reboot": machine.scheduled_reboot_at is not None,
        "scheduled_reboot_at": iso(machine.scheduled_reboot_at) if machine.scheduled_reboot_at else None,
        "agent_status": machine.agent_status,
        "himds": machine.himds,
        "os": {"sku": spec.os_sku, "version": spec.os_version, "build": spec.build, "revision": spec.revision},
        "vsm": {"status": machine.vbs_status, "configured": machine.vbs_configured},
        "licensing": {
            "override": machine.licensing_override,
            "mutex": machine.license_mutex,
            "fix_active": machine.licensing_fix_active,
        },
        "hotpatch_status": feature.status if feature is not None else None,
        "license_profile": license_profile_resource(machine, now) if machine.license_profile else None,
        "license_writes": len(machine.license_writes),
        "payg_enrolled": machine.payg_enrolled,
        "tags": dict(machine.tags),
        "run_commands": [
            {
                "name": run.name,
                "script": run.request.script_name,
                "execution_state": run.execution_state,
                "created_at": iso(run.created_at),
                "ended_at": iso(run.end_time) if run.end_time else None,
                "exit_code": run.exit_code,
                "result_lost": run.result_lost,
                "deleted": run.deleted,
            }
            for run in machine.run_history
        ],
    }
