"""SPEC §2 as pure functions: the eight checks and the action planner.

The checks run in order and the first that applies decides the final state;
checks 1-7 need only the ARM resource, check 8 needs the readiness script
(so a machine rejected earlier costs no Run Command).
"""

from __future__ import annotations

from dataclasses import dataclass

from .facts import (
    AZURE_EDITION,
    HOTPATCH_BUILD,
    LICENSING_BUG_REVISION,
    MIN_HOTPATCH_REVISION,
    SUPPORTED_EDITIONS,
    MachineFacts,
)
from .readiness import Readiness
from .vocabulary import Action, FinalState, Reason, WorkaroundMode, disconnected_reason


@dataclass(frozen=True)
class Verdict:
    """A final state decided by a check: ``state`` and ``reason`` (reason may be dynamic)."""

    state: FinalState
    reason: str
    detail: str = ""


def is_excluded(facts: MachineFacts, exclude_tag: str) -> bool:
    """Check 1: tag ``exclude_tag`` = ``exclude``, tag name and value case-insensitive."""
    wanted = exclude_tag.strip().lower()
    return any(k.strip().lower() == wanted and str(v).strip().lower() == "exclude" for k, v in facts.tags.items())


def check_arm_facts(facts: MachineFacts, exclude_tag: str = "hotpatch") -> Verdict | None:
    """Checks 1-7 (ARM resource only). None: proceed to the readiness check."""
    if is_excluded(facts, exclude_tag):
        return Verdict(FinalState.EXCLUDED, Reason.TAGGED_EXCLUDE, f"tag {exclude_tag}=exclude")
    version = facts.os_version
    if not facts.is_windows_server or version is None or version.build < HOTPATCH_BUILD:
        return Verdict(
            FinalState.INELIGIBLE, Reason.UNSUPPORTED_OS,
            f"osSku {facts.os_sku!r}, osVersion {facts.os_version_text!r}: needs Windows Server 2025",
        )
    if version.build > HOTPATCH_BUILD:
        return Verdict(FinalState.INELIGIBLE, Reason.PREVIEW_BUILD, f"build {version.build} is a preview build")
    edition = facts.edition
    if edition not in SUPPORTED_EDITIONS:
        return Verdict(FinalState.INELIGIBLE, Reason.UNSUPPORTED_EDITION, f"edition {facts.os_sku!r}")
    if edition == AZURE_EDITION:
        return Verdict(FinalState.NATIVE_AZURE_EDITION, Reason.HOTPATCH_BUILT_IN, "Azure Edition has Hotpatch built in")
    if version.revision < MIN_HOTPATCH_REVISION:
        return Verdict(
            FinalState.INELIGIBLE, Reason.BUILD_TOO_OLD,
            f"revision {version.revision} < {MIN_HOTPATCH_REVISION}: install a newer cumulative update",
        )
    if facts.status != "Connected":
        return Verdict(FinalState.SKIPPED_DISCONNECTED, disconnected_reason(facts.status), f"agent {facts.status}")
    return None


def check_readiness(readiness: Readiness) -> Verdict | None:
    """Check 8: VBS hardware prerequisites (UEFI with Secure Boot)."""
    if not readiness.uefi_secure_boot:
        return Verdict(
            FinalState.INELIGIBLE, Reason.VBS_HARDWARE,
            f"firmware {readiness.firmware}, Secure Boot {'on' if readiness.secure_boot else 'off'}",
        )
    return None


@dataclass(frozen=True)
class Plan:
    """What a machine that passed all checks needs, in SPEC order."""

    enable_vsm: bool
    licensing_workaround: bool
    enable_hotpatch: bool

    @property
    def reboot(self) -> bool:
        """One reboot covers both VSM and the workaround."""
        return self.enable_vsm or self.licensing_workaround

    @property
    def actions(self) -> list[str]:
        planned = [
            (self.enable_vsm, Action.ENABLE_VSM),
            (self.licensing_workaround, Action.LICENSING_WORKAROUND),
            (self.reboot, Action.REBOOT),
            (self.enable_hotpatch, Action.ENABLE_HOTPATCH),
        ]
        return [action.value for wanted, action in planned if wanted]


def workaround_applies(revision: int, readiness: Readiness) -> bool:
    """The licensing issue can affect the machine and its override is not set yet."""
    return revision >= LICENSING_BUG_REVISION and not readiness.workaround_active


def plan_actions(readiness: Readiness, hotpatch_enabled: bool, workaround_mode: str) -> Plan:
    """The planner: VSM when not running; the workaround in ``proactive`` mode when it applies
    (``reactive`` applies it only when enablement is stuck, ``off`` never); enable unless Enabled."""
    return Plan(
        enable_vsm=not readiness.vsm_running,
        licensing_workaround=(
            workaround_mode == WorkaroundMode.PROACTIVE and workaround_applies(readiness.ubr, readiness)
        ),
        enable_hotpatch=not hotpatch_enabled,
    )
