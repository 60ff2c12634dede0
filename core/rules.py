"""SPEC §2 as pure functions: the eight checks and the action planner.

The checks run in order and the first that applies decides the final state;
checks 1-7 need only the ARM resource, check 8 needs the readiness script
(so a machine rejected earlier costs no Run Command).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .facts import (
    AZURE_EDITION,
    HOTPATCH_BUILD,
    MIN_HOTPATCH_REVISION,
    SUPPORTED_EDITIONS,
    MachineFacts,
)
from .readiness import Readiness
from .vocabulary import Action, FinalState, InstallState, Reason, WorkaroundMode, disconnected_reason


@dataclass(frozen=True)
class Verdict:
    """A final state decided by a check: ``state`` and ``reason`` (reason may be dynamic); an installation run's
    states are ``InstallState``'s."""

    state: FinalState | InstallState
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


MIN_RUN_COMMAND_AGENT = (1, 33)  # Run Command needs Connected Machine agent 1.33 or later
RUN_COMMAND_EXTENSION = "Microsoft.CPlat.Core/RunCommandHandlerWindows"
_AGENT_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")


def check_run_command(facts: MachineFacts) -> Verdict | None:
    """Whether Run Command can reach the machine at all, from what the ARM resource says of its agent (version and
    ``azcmagent config``): such a machine is escalated before any script, its detail naming what to change.
    An agent that does not report a setting is not judged on it (the Run Command itself will tell)."""
    version = _AGENT_VERSION.match(facts.agent_version)
    if version and (int(version.group(1)), int(version.group(2))) < MIN_RUN_COMMAND_AGENT:
        return Verdict(
            FinalState.ESCALATED, Reason.AGENT_TOO_OLD,
            f"Connected Machine agent {facts.agent_version} predates Run Command (needs 1.33 or later): upgrade the "
            "agent (azcmagent, or enable automatic agent upgrade)",
        )
    blocked = _run_command_blocker(facts)
    if blocked:
        return Verdict(FinalState.ESCALATED, Reason.RUN_COMMAND_BLOCKED, blocked)
    return None


def _run_command_blocker(facts: MachineFacts) -> str:
    extension = RUN_COMMAND_EXTENSION.lower()
    if facts.config_mode == "monitor":
        return ("the agent runs in monitor mode (agentConfiguration.configMode monitor), which refuses Run Command: "
                "on the machine run `azcmagent config set config.mode full`")
    if facts.extensions_enabled == "false":
        return ("extensions are disabled on the agent (agentConfiguration.extensionsEnabled false): on the machine run "
                "`azcmagent config set extensions.enabled true`")
    if any(entry.lower() == extension for entry in facts.extensions_blocklist):
        kept = [e for e in facts.extensions_blocklist if e.lower() != extension]
        command = (f'azcmagent config set extensions.blocklist "{",".join(kept)}"' if kept
                   else "azcmagent config clear extensions.blocklist")
        return (f"{RUN_COMMAND_EXTENSION} is in the agent's extensions.blocklist (agentConfiguration."
                f"extensionsBlockList): on the machine run `{command}`")
    if facts.extensions_allowlist and not any(entry.lower() == extension for entry in facts.extensions_allowlist):
        allowed = ",".join([*facts.extensions_allowlist, RUN_COMMAND_EXTENSION])
        return (f"the agent's extensions.allowlist (agentConfiguration.extensionsAllowList) omits "
                f'{RUN_COMMAND_EXTENSION}: on the machine run `azcmagent config set extensions.allowlist "{allowed}"`')
    return ""


def check_readiness(readiness: Readiness) -> Verdict | None:
    """Check 8: VBS hardware prerequisites (UEFI with Secure Boot). A firmware type no signal could tell is not
    a verdict on the hardware: a human looks."""
    if readiness.firmware_unknown:
        return Verdict(
            FinalState.ESCALATED, Reason.VBS_HARDWARE,
            "the firmware type could not be determined ($env:firmware_type, GetFirmwareType and the SecureBoot "
            "registry key gave no answer): check it on the machine (msinfo32, BIOS Mode)",
        )
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


def workaround_applies(licensing_issue: bool, readiness: Readiness) -> bool:
    """The licensing issue can affect the machine's revision (per the baselines data's range, which the
    activity that read the revision judged) and its override is not set yet."""
    return licensing_issue and not readiness.workaround_active


def plan_actions(readiness: Readiness, hotpatch_enabled: bool, workaround_mode: str, licensing_issue: bool) -> Plan:
    """The planner: VSM when not running; the workaround in ``proactive`` mode when it applies
    (``reactive`` applies it only when enablement is stuck, ``off`` never); enable unless Enabled."""
    return Plan(
        enable_vsm=not readiness.vsm_running,
        licensing_workaround=(
            workaround_mode == WorkaroundMode.PROACTIVE and workaround_applies(licensing_issue, readiness)
        ),
        enable_hotpatch=not hotpatch_enabled,
    )
