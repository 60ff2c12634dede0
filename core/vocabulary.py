"""The product's names (SPEC §2): final states, reasons, actions. They are interfaces."""

from __future__ import annotations

from enum import StrEnum


class FinalState(StrEnum):
    HOTPATCH_ENABLED = "hotpatch_enabled"
    NATIVE_AZURE_EDITION = "native_azure_edition"
    INELIGIBLE = "ineligible"
    EXCLUDED = "excluded"
    SKIPPED_DISCONNECTED = "skipped_disconnected"
    ESCALATED = "escalated"
    PLANNED = "planned"
    HALTED = "halted"


class InstallState(StrEnum):
    """The final states of a machine in a hotpatch installation run (its report has the enrollment report's shape)."""

    HOTPATCH_INSTALLED = "hotpatch_installed"
    NOTHING_TO_INSTALL = "nothing_to_install"
    NOT_ENROLLED = "not_enrolled"
    REBOOT_REQUIRED = "reboot_required"
    ESCALATED = "escalated"
    PLANNED = "planned"  # internal: assessed, waits for its wave (never a final state of a report)
    HALTED = "halted"


class InstallReason(StrEnum):
    INSTALLED = "installed"  # the month's hotpatches installed, nothing left that needs a reboot
    UP_TO_DATE = "up_to_date"  # nothing to install
    UPDATES_PENDING = "updates_pending"  # installed what did not need a reboot; the rest waits for one
    LICENSE_NOT_ENABLED = "license_not_enabled"  # not enrolled on both levels
    FORECAST_REBOOT = "forecast_reboot"  # this month's update reboots it (baseline month, off-baseline, pending...)
    FORECAST_UNKNOWN = "forecast_unknown"  # cannot tell that it installs without a reboot: not touched
    INSTALL_FAILED = "install_failed"
    UNEXPECTED_REBOOT = "unexpected_reboot"  # its boot time moved during the installation


class Reason(StrEnum):
    TAGGED_EXCLUDE = "tagged_exclude"
    UNSUPPORTED_OS = "unsupported_os"
    PREVIEW_BUILD = "preview_build"
    UNSUPPORTED_EDITION = "unsupported_edition"
    HOTPATCH_BUILT_IN = "hotpatch_built_in"
    BUILD_TOO_OLD = "build_too_old"
    VBS_HARDWARE = "vbs_hardware"
    REBOOT_TIMEOUT = "reboot_timeout"
    VSM_NOT_RUNNING = "vsm_not_running"
    ENABLE_FAILED = "enable_failed"
    ENABLE_STUCK = "enable_stuck"
    ENABLE_ACTION_REQUIRED = "enable_action_required"  # the machine reports hotpatchEnablementStatus ActionRequired
    AGENT_TOO_OLD = "agent_too_old"  # the Connected Machine agent predates Run Command (1.33)
    RUN_COMMAND_BLOCKED = "run_command_blocked"  # the agent's configuration refuses the Run Command extension
    RUN_COMMAND_FAILED = "run_command_failed"
    APPROVAL_TIMEOUT = "approval_timeout"
    REBOOT_REQUIRED = "reboot_required"
    ALREADY_ENABLED = "already_enabled"
    ENABLED = "enabled"
    DRY_RUN = "dry_run"
    GUARDRAIL = "guardrail"
    MACHINE_NOT_FOUND = "machine_not_found"  # the Arc resource was deleted between discovery and work
    ORCHESTRATION_FAILED = "orchestration_failed"  # the machine's orchestration crashed: reported, not lost
    AWAITING_WAVE = "awaiting_wave"  # assessed, needs a change, its wave has not opened (never a final reason)
    # Read Disconnected once: its window reads it again after the grace period (never a final reason).
    AWAITING_RECHECK = "awaiting_recheck"


def disconnected_reason(status: str) -> str:
    """Check 7's reason: ``agent_<status lowercased>`` (e.g. ``agent_disconnected``)."""
    return f"agent_{(status or 'unknown').strip().lower()}"


class Action(StrEnum):
    ENABLE_VSM = "enable_vsm"
    LICENSING_WORKAROUND = "licensing_workaround"
    REBOOT = "reboot"
    ENABLE_HOTPATCH = "enable_hotpatch"
    INSTALL_HOTPATCHES = "install_hotpatches"


class RebootPolicy(StrEnum):
    AUTO = "auto"
    APPROVAL = "approval"
    WINDOW = "window"
    NEVER = "never"


class WorkaroundMode(StrEnum):
    PROACTIVE = "proactive"
    REACTIVE = "reactive"
    OFF = "off"


class BaselineFlag(StrEnum):
    ON = "on"
    OFF = "off"
    UNKNOWN = "unknown"


class NextUpdate(StrEnum):
    """The report's ``next_update``: what the next monthly update will do to the machine."""

    HOTPATCH = "hotpatch"  # installs without a reboot
    REBOOT = "reboot"  # will reboot (``next_update_detail`` says why)
    UNKNOWN = "unknown"


# The event a reboot approval raises on a machine orchestration.
REBOOT_APPROVED_EVENT = "RebootApproved"
