"""SPEC §2: every check row with its exact reason, and every action combination."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.baselines import load_baselines
from core.facts import MachineFacts, facts_from_arm, parse_edition, parse_os_version
from core.readiness import Readiness
from core.rules import Plan, check_arm_facts, check_readiness, plan_actions
from core.vocabulary import FinalState

SUB = "11111111-1111-1111-1111-111111111111"


def machine(
    *, status: str = "Connected", os_sku: str = "Windows Server 2025 Datacenter", os_version: str = "10.0.26100.6899",
    tags: dict[str, str] | None = None, os_type: str = "windows",
) -> MachineFacts:
    return MachineFacts(
        id=f"/subscriptions/{SUB}/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/m1", name="m1",
        subscription_id=SUB, resource_group="rg", status=status, os_type=os_type, os_sku=os_sku,
        os_version_text=os_version, tags=tags or {},
    )


def readiness(**overrides: object) -> Readiness:
    values: dict[str, object] = dict(
        build=26100, ubr=6899, edition_id="ServerDatacenter", product_name="Windows Server 2025 Datacenter",
        installation_type="Server Core", vbs_status=2, vbs_configured=1, firmware="UEFI", secure_boot=True,
        licensing_override=None, license_mutex=True, himds="Running", last_boot="2026-01-01T00:00:00Z",
        hotfixes=("KB5066835",),
    )
    values.update(overrides)
    return Readiness(**values)  # type: ignore[arg-type]


CHECK_ROWS = [
    # (row, machine kwargs, expected state, expected reason)
    (1, dict(tags={"hotpatch": "exclude"}), FinalState.EXCLUDED, "tagged_exclude"),
    (1, dict(tags={"HotPatch": "EXCLUDE"}), FinalState.EXCLUDED, "tagged_exclude"),
    (1, dict(tags={"hotpatch": "exclude"}, status="Disconnected", os_version="10.0.17763.1"),
     FinalState.EXCLUDED, "tagged_exclude"),
    (2, dict(os_sku="Windows Server 2022 Datacenter", os_version="10.0.20348.2700"),
     FinalState.INELIGIBLE, "unsupported_os"),
    (2, dict(os_sku="Ubuntu 22.04", os_type="linux", os_version="22.04"), FinalState.INELIGIBLE, "unsupported_os"),
    (2, dict(os_sku="Windows 11 Enterprise", os_version="10.0.26100.6899"), FinalState.INELIGIBLE, "unsupported_os"),
    (2, dict(os_version="garbage"), FinalState.INELIGIBLE, "unsupported_os"),
    (3, dict(os_version="10.0.26200.100"), FinalState.INELIGIBLE, "preview_build"),
    (4, dict(os_sku="Windows Server 2025 Datacenter Evaluation"), FinalState.INELIGIBLE, "unsupported_edition"),
    (4, dict(os_sku="Windows Server 2025 Essentials"), FinalState.INELIGIBLE, "unsupported_edition"),
    (5, dict(os_sku="Windows Server 2025 Datacenter: Azure Edition"), FinalState.NATIVE_AZURE_EDITION,
     "hotpatch_built_in"),
    (5, dict(os_sku="Windows Server 2025 Datacenter: Azure Edition", os_version="10.0.26100.1000"),
     FinalState.NATIVE_AZURE_EDITION, "hotpatch_built_in"),
    (6, dict(os_version="10.0.26100.1741"), FinalState.INELIGIBLE, "build_too_old"),
    (7, dict(status="Disconnected"), FinalState.SKIPPED_DISCONNECTED, "agent_disconnected"),
    (7, dict(status="Error"), FinalState.SKIPPED_DISCONNECTED, "agent_error"),
    (7, dict(status="Expired"), FinalState.SKIPPED_DISCONNECTED, "agent_expired"),
]


@pytest.mark.parametrize(("row", "kwargs", "state", "reason"), CHECK_ROWS)
def test_arm_checks_in_order(row: int, kwargs: dict, state: FinalState, reason: str) -> None:
    verdict = check_arm_facts(machine(**kwargs))
    assert verdict is not None, f"row {row} should decide"
    assert (verdict.state, verdict.reason) == (state, reason)


@pytest.mark.parametrize(
    "kwargs",
    [dict(), dict(os_version="10.0.26100.1742"), dict(os_sku="Windows Server 2025 Standard"),
     dict(tags={"hotpatch": "include"}), dict(tags={"owner": "exclude"})],
)
def test_machine_passing_arm_checks_proceeds(kwargs: dict) -> None:
    assert check_arm_facts(machine(**kwargs)) is None


# A machine that fails a check and every later one too: the first check decides (SPEC §2 "in this order").
EARLIER_CHECK_WINS = [
    (2, dict(os_sku="Windows Server 2022 Essentials", os_version="10.0.20348.100", status="Disconnected"),
     FinalState.INELIGIBLE, "unsupported_os"),
    (3, dict(os_sku="Windows Server 2025 Essentials", os_version="10.0.26200.100", status="Disconnected"),
     FinalState.INELIGIBLE, "preview_build"),
    (4, dict(os_sku="Windows Server 2025 Essentials", os_version="10.0.26100.1000", status="Disconnected"),
     FinalState.INELIGIBLE, "unsupported_edition"),
    (5, dict(os_sku="Windows Server 2025 Datacenter: Azure Edition", os_version="10.0.26100.1000",
             status="Disconnected"), FinalState.NATIVE_AZURE_EDITION, "hotpatch_built_in"),
    (6, dict(os_version="10.0.26100.1741", status="Disconnected"), FinalState.INELIGIBLE, "build_too_old"),
]


@pytest.mark.parametrize(("row", "kwargs", "state", "reason"), EARLIER_CHECK_WINS)
def test_the_first_check_that_applies_decides_over_every_later_one(row: int, kwargs: dict, state: FinalState,
                                                                   reason: str) -> None:
    verdict = check_arm_facts(machine(**kwargs))
    assert verdict is not None, f"row {row} should decide"
    assert (verdict.state, verdict.reason) == (state, reason)


def test_custom_exclude_tag() -> None:
    assert check_arm_facts(machine(tags={"patching": "Exclude"}), exclude_tag="patching").reason == "tagged_exclude"
    assert check_arm_facts(machine(tags={"hotpatch": "exclude"}), exclude_tag="patching") is None


@pytest.mark.parametrize(
    ("firmware", "secure_boot", "decides"),
    [("UEFI", True, False), ("UEFI", False, True), ("Legacy", True, True), ("BIOS", False, True)],
)
def test_check_8_vbs_hardware(firmware: str, secure_boot: bool, decides: bool) -> None:
    verdict = check_readiness(readiness(firmware=firmware, secure_boot=secure_boot))
    if decides:
        assert verdict is not None and (verdict.state, verdict.reason) == (FinalState.INELIGIBLE, "vbs_hardware")
    else:
        assert verdict is None


ACTION_ROWS = [
    # vbs, ubr, override, enabled, mode -> actions
    (2, 6899, None, False, "proactive", ["licensing_workaround", "reboot", "enable_hotpatch"]),
    (0, 6899, None, False, "proactive", ["enable_vsm", "licensing_workaround", "reboot", "enable_hotpatch"]),
    (0, 6899, 1, False, "proactive", ["enable_vsm", "reboot", "enable_hotpatch"]),
    (1, 5000, None, False, "proactive", ["enable_vsm", "reboot", "enable_hotpatch"]),
    (2, 5000, None, False, "proactive", ["enable_hotpatch"]),
    (2, 6898, None, False, "proactive", ["enable_hotpatch"]),
    (2, 6899, 1, False, "proactive", ["enable_hotpatch"]),
    (2, 6899, 0, False, "proactive", ["licensing_workaround", "reboot", "enable_hotpatch"]),
    (2, 6899, 2, False, "proactive", ["licensing_workaround", "reboot", "enable_hotpatch"]),  # set, but not to 1
    (2, 32230, None, False, "proactive", ["licensing_workaround", "reboot", "enable_hotpatch"]),
    (2, 6899, None, False, "reactive", ["enable_hotpatch"]),
    (0, 6899, None, False, "reactive", ["enable_vsm", "reboot", "enable_hotpatch"]),
    (2, 6899, None, False, "off", ["enable_hotpatch"]),
    (0, 6899, None, False, "off", ["enable_vsm", "reboot", "enable_hotpatch"]),
    (2, 6899, 1, True, "proactive", []),
    (2, 5000, None, True, "proactive", []),
    (2, 6899, None, True, "proactive", ["licensing_workaround", "reboot"]),
    (None, 6899, 1, True, "proactive", ["enable_vsm", "reboot"]),
]


@pytest.mark.parametrize(("vbs", "ubr", "override", "enabled", "mode", "actions"), ACTION_ROWS)
def test_action_planner(vbs: int | None, ubr: int, override: int | None, enabled: bool, mode: str,
                        actions: list[str]) -> None:
    # The licensing issue's range comes from the baselines data (the activity that read the revision judges it).
    affected = load_baselines().licensing_issue.affects(ubr)
    plan = plan_actions(readiness(vbs_status=vbs, ubr=ubr, licensing_override=override), enabled, mode, affected)
    assert plan.actions == actions
    assert plan.reboot == ("reboot" in actions)
    assert plan.actions.count("reboot") <= 1


@pytest.mark.parametrize(
    ("status", "enabled"),
    [("Enabled", True), ("enabled", True), ("Enabling", False), ("Disabled", False), ("Disabling", False),
     ("Failed", False), (None, False)],
)
def test_hotpatch_is_enabled_again_unless_its_feature_already_says_enabled(status: str | None, enabled: bool) -> None:
    facts = replace(machine(), hotpatch_feature_status=status)
    assert facts.hotpatch_enabled is enabled
    plan = plan_actions(readiness(licensing_override=1), facts.hotpatch_enabled, "proactive", True)
    assert plan.actions == ([] if enabled else ["enable_hotpatch"])


def test_one_reboot_covers_both() -> None:
    assert Plan(enable_vsm=True, licensing_workaround=True, enable_hotpatch=True).actions.count("reboot") == 1


def test_version_and_edition_parsing() -> None:
    version = parse_os_version("10.0.26100.6899")
    assert version is not None and (version.build, version.revision) == (26100, 6899)
    assert parse_os_version("10.0.26100.10000").revision == 10000  # integers, not strings
    assert parse_os_version("") is None
    assert parse_edition("Windows Server 2025 Datacenter: Azure Edition") == "datacenter: azure edition"
    assert parse_edition("Windows Server 2025 Datacenter Azure Edition") == "datacenter: azure edition"
    assert parse_edition("windows server 2025 standard") == "standard"
    assert parse_edition("Windows 11 Pro") is None


def test_facts_from_arm_reads_the_spec_shape() -> None:
    body = {
        "id": f"/subscriptions/{SUB.upper()}/resourceGroups/RG1/providers/Microsoft.HybridCompute/machines/web-1",
        "name": "web-1", "location": "westeurope", "tags": {"hotpatch": "exclude"},
        "properties": {
            "status": "Connected", "osType": "windows", "osSku": "Windows Server 2025 Standard",
            "osVersion": "10.0.26100.6899",
            "licenseProfile": {"productProfile": {"productFeatures": [
                {"name": "Hotpatch", "subscriptionStatus": "Enabling"}]}},
            "osProfile": {"windowsConfiguration": {"patchSettings": {"status": {
                "hotpatchEnablementStatus": "PendingEvaluation"}}}},
        },
    }
    facts = facts_from_arm(body)
    assert (facts.subscription_id, facts.resource_group, facts.name) == (SUB, "RG1", "web-1")
    assert facts.hotpatch_feature_status == "Enabling"
    assert facts.hotpatch_enablement_status == "PendingEvaluation"
    assert MachineFacts.from_json(facts.to_json()) == facts


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({}, "no 'id'"),
        ({"id": "/subscriptions/x/resourceGroups/r/providers/Microsoft.Compute/virtualMachines/v"},
         "not an Arc machine resource id"),
        ({"id": f"/subscriptions/{SUB}/resourceGroups/r/providers/Microsoft.HybridCompute/machines/m"},
         "no 'properties'"),
        ([], "must be a JSON object"),
    ],
)
def test_unexpected_arm_payload_is_named(body: object, message: str) -> None:
    from core.facts import MachinePayloadError

    with pytest.raises(MachinePayloadError, match=message):
        facts_from_arm(body)  # type: ignore[arg-type]
