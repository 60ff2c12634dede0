"""Scenario files (validated, errors name what is wrong), generated fleets, the default fleet."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from arc_hotpatch.twin import (
    MACHINE_ATTRIBUTES,
    MachineSpec,
    ScenarioError,
    default_fleet,
    fleet_from_options,
    generate_fleet,
    load_scenario,
)


def scenario(*machines: dict[str, Any], **top: Any) -> dict[str, Any]:
    return {"seed": 1, "groups": [{"machine": m} for m in machines], **top}


def test_every_spec_attribute_is_known():
    spec_attributes = {
        "status",
        "os_sku",
        "os_version",
        "uefi",
        "secure_boot",
        "vbs_status",
        "vsm_starts",
        "hotpatch",
        "licensing_bug",
        "workaround_applied",
        "enable_outcome",
        "enable_minutes",
        "reboot_minutes",
        "reboot_hangs",
        "run_command_fails",
        "tags",
        "name",
        "resource_group",
        "subscription",
    }
    assert spec_attributes <= set(MACHINE_ATTRIBUTES)
    spec_6_additions = {"agent_version", "extensions_enabled", "extensions_blocklist", "extensions_allowlist",
                        "agent_config_mode", "reboot_pending"}  # SPEC §6's added scenario attributes
    assert spec_6_additions <= set(MACHINE_ATTRIBUTES)
    assert set(MACHINE_ATTRIBUTES) - spec_attributes - spec_6_additions == {"esu_profile"}  # the documented extension


def test_defaults_are_a_ready_machine_with_the_licensing_bug():
    fleet = load_scenario(scenario({}))
    (machine,) = fleet.machines
    assert machine == MachineSpec(name="machine-1", licensing_bug=True)
    assert (machine.status, machine.os_sku, machine.os_version) == (
        "Connected",
        "Windows Server 2025 Datacenter",
        "10.0.26100.6899",
    )
    assert (machine.uefi, machine.secure_boot, machine.vbs_status, machine.vsm_starts) == (True, True, 2, True)
    assert (machine.hotpatch, machine.enable_outcome, machine.enable_minutes, machine.reboot_minutes) == (
        "Disabled",
        "ok",
        10,
        5,
    )
    assert not (machine.workaround_applied or machine.reboot_hangs or machine.run_command_fails or machine.tags)
    assert len(fleet.subscription_ids) == 1


@pytest.mark.parametrize(
    ("attributes", "bug"),
    [
        ({"os_version": "10.0.26100.6899"}, True),
        ({"os_version": "10.0.26100.7019"}, True),
        ({"os_version": "10.0.26100.6584"}, False),
        ({"os_sku": "Windows Server 2025 Datacenter: Azure Edition"}, False),
        ({"os_sku": "Windows Server 2022 Datacenter", "os_version": "10.0.20348.6899"}, False),
        ({"licensing_bug": False}, False),
        ({"os_version": "10.0.26100.4946", "licensing_bug": True}, True),
    ],
)
def test_licensing_bug_default_follows_revision_and_edition(attributes, bug):
    assert load_scenario(scenario(attributes)).machines[0].licensing_bug is bug


def test_firmware_defaults_follow_uefi():
    bios = load_scenario(scenario({"uefi": False})).machines[0]
    assert (bios.secure_boot, bios.vbs_status) == (False, 0)
    no_secure_boot = load_scenario(scenario({"secure_boot": False})).machines[0]
    assert no_secure_boot.vbs_status == 0


def test_groups_are_named_and_placed():
    fleet = load_scenario(
        {
            "seed": 9,
            "subscriptions": 3,
            "groups": [
                {"count": 3, "machine": {"name": "web", "resource_group": "rg-web", "subscription": 2}},
                {"count": 1, "machine": {"name": "db"}},
                {"count": 2, "machine": {}},
            ],
        }
    )
    assert [m.name for m in fleet.machines] == ["web-1", "web-2", "web-3", "db", "machine-3-1", "machine-3-2"]
    assert {fleet.subscription_of(m) for m in fleet.machines[:3]} == {fleet.subscription_ids[2]}
    assert fleet.machines[0].resource_group == "rg-web" and fleet.machines[3].resource_group == "rg-arc-servers"
    again = load_scenario({"seed": 9, "subscriptions": 3, "groups": [{"machine": {}}]})
    assert again.subscription_ids == fleet.subscription_ids  # deterministic GUIDs from the seed
    other = load_scenario({"seed": 10, "subscriptions": 3, "groups": [{"machine": {}}]})
    assert set(other.subscription_ids).isdisjoint(fleet.subscription_ids)


def test_explicit_subscription_ids():
    ids = ["11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"]
    fleet = load_scenario({"subscriptions": ids, "groups": [{"machine": {"subscription": 1}}]})
    assert fleet.subscription_ids == tuple(ids) and fleet.subscription_of(fleet.machines[0]) == ids[1]


@pytest.mark.parametrize(
    ("document", "message"),
    [
        (scenario({}, {"vbs": 2}), "groups[1].machine: unknown attribute 'vbs'"),
        (scenario({"vbs_status": 3}), "groups[0].machine.vbs_status: 3 is not accepted; expected one of 0, 1, 2"),
        (
            scenario({"status": "Online"}),
            "groups[0].machine.status: 'Online' is not accepted; expected one of \"Connected\"",
        ),
        (scenario({"hotpatch": "On"}), "groups[0].machine.hotpatch: 'On'"),
        (scenario({"enable_outcome": "slow"}), "groups[0].machine.enable_outcome: 'slow'"),
        (scenario({"uefi": "yes"}), "groups[0].machine.uefi: 'yes' is not accepted; expected true or false"),
        (scenario({"enable_minutes": -1}), "groups[0].machine.enable_minutes: -1"),
        (scenario({"reboot_minutes": True}), "groups[0].machine.reboot_minutes: True"),
        (scenario({"tags": {"env": 1}}), "groups[0].machine.tags"),
        (scenario({"os_version": "26100.6899"}), "groups[0].machine.os_version: '26100.6899'"),
        (scenario({"os_sku": ""}), "groups[0].machine.os_sku"),
        (scenario({"name": "bad name"}), "groups[0].machine.name: 'bad name'"),
        (scenario({"resource_group": "rg."}), "groups[0].machine.resource_group: 'rg.'"),
        (scenario({"subscription": 1}), "groups[0].machine.subscription: 1 is not accepted; expected an index below 1"),
        (scenario({"name": "a"}, {"name": "A"}), "groups[1].machine.name: 'A' in resource group"),
        ({"groups": [{"count": 2, "machine": {"name": "x" * 53}}]}, "is too long or invalid once numbered"),
        ({"groups": [{"count": 0}]}, "groups[0].count: 0"),
        ({"groups": [{"machines": {}}]}, "groups[0]: unknown key 'machines'"),
        ({"groups": []}, "groups: expected a non-empty list"),
        ({"seed": "x", "groups": [{}]}, "seed: 'x'"),
        ({"subscriptions": 0, "groups": [{}]}, "subscriptions: 0"),
        ({"subscriptions": ["nope"], "groups": [{}]}, "subscriptions[0]: 'nope'"),
        ({"fleet": [], "groups": [{}]}, "scenario: unknown key 'fleet'"),
    ],
)
def test_invalid_scenarios_name_the_problem(document, message):
    with pytest.raises(ScenarioError) as error:
        load_scenario(document)
    assert message in str(error.value)


def test_scenario_files(tmp_path: Path):
    path = tmp_path / "fleet.json"
    path.write_text(json.dumps(scenario({"name": "from-file"})), encoding="utf-8")
    assert load_scenario(path).machines[0].name == "from-file"
    assert load_scenario(str(path)).machines[0].name == "from-file"
    path.write_text("{nope", encoding="utf-8")
    with pytest.raises(ScenarioError, match="not valid JSON"):
        load_scenario(path)
    with pytest.raises(ScenarioError, match=r"missing\.json"):
        load_scenario(tmp_path / "missing.json")


def test_generated_fleets_are_deterministic_and_realistic():
    fleet = generate_fleet(machines=2000, subscriptions=3, seed=7)
    assert fleet == generate_fleet(machines=2000, subscriptions=3, seed=7)
    assert fleet.machines != generate_fleet(machines=2000, subscriptions=3, seed=8).machines
    machines = fleet.machines
    assert len({(m.subscription, m.resource_group, m.name) for m in machines}) == 2000
    assert {m.subscription for m in machines} == {0, 1, 2}
    share = Counter()
    for m in machines:
        share["ready"] += m.is_windows_server and m.status == "Connected" and m.os_version == "10.0.26100.6899"
        share["bug"] += m.licensing_bug
        share["vsm_off"] += m.vbs_status != 2
        share["enabled"] += m.hotpatch == "Enabled"
        share["azure_edition"] += m.is_azure_edition
        share["ws2022"] += "2022" in m.os_sku
        share["old_build"] += m.revision is not None and m.revision < 1742
        share["disconnected"] += m.status != "Connected"
        share["excluded"] += m.tags.get("hotpatch", "").lower() == "exclude"
        share["bios"] += not m.uefi
        share["stuck_or_fail"] += m.enable_outcome != "ok"
        share["linux"] += not m.is_windows
    assert share["ready"] > 1000 and share["bug"] > 1200
    for kind in ("vsm_off", "enabled", "azure_edition", "ws2022", "disconnected", "excluded"):
        assert 40 <= share[kind] <= 300, (kind, share[kind])
    for kind in ("old_build", "bios", "stuck_or_fail", "linux"):
        assert 5 <= share[kind] <= 60, (kind, share[kind])


def test_a_ready_fleet_has_only_ready_machines_with_the_licensing_bug():
    fleet = generate_fleet(machines=300, subscriptions=10, seed=7, mix="ready")
    assert {m.subscription for m in fleet.machines} == set(range(10))
    assert all(m.is_windows_server and m.status == "Connected" and m.vbs_status == 2 and m.uefi
               and m.hotpatch == "Disabled" and m.licensing_bug and m.enable_outcome == "ok"
               and not m.tags.get("hotpatch") for m in fleet.machines)
    with pytest.raises(ScenarioError, match="unknown mix 'all'"):
        generate_fleet(machines=3, mix="all")


def test_default_fleet_covers_every_final_state():
    fleet = default_fleet()
    assert len(fleet.machines) == 27 and len(fleet.subscription_ids) == 2
    assert fleet == default_fleet()
    by_name = {m.name: m for m in fleet.machines}
    assert by_name["enrolled"].hotpatch == "Enabled"  # hotpatch_enabled / already_enabled
    assert by_name["web-1"].licensing_bug and by_name["vsm-off"].vbs_status == 0  # enabled, with actions
    assert by_name["azure-edition"].is_azure_edition  # native_azure_edition
    assert "2022" in by_name["legacy-2022"].os_sku and not by_name["ubuntu"].is_windows  # unsupported_os
    assert by_name["insider"].build > 26100  # preview_build
    assert by_name["essentials"].edition_id == "ServerEssentials"  # unsupported_edition
    assert by_name["rtm-build"].revision < 1742  # build_too_old
    assert by_name["excluded"].tags == {"hotpatch": "exclude"}  # excluded
    assert by_name["offline"].status == "Disconnected" and by_name["agent-error"].status == "Error"
    assert not by_name["bios"].uefi  # vbs_hardware
    assert not by_name["no-vsm"].vsm_starts  # vsm_not_running
    assert by_name["hangs"].reboot_hangs  # reboot_timeout
    assert by_name["enable-fails"].enable_outcome == "fail" and by_name["enable-stuck"].enable_outcome == "stuck"
    assert by_name["blocked"].run_command_fails  # run_command_failed
    assert by_name["old-agent"].agent_version.startswith("1.31.")  # agent_too_old
    assert by_name["monitor-only"].agent_config_mode == "monitor"  # run_command_blocked
    assert by_name["esu-linked"].esu_profile


def test_fleet_from_cli_options(tmp_path: Path):
    assert fleet_from_options() == default_fleet()
    generated = fleet_from_options(machines=30, subscriptions=2, seed=4)
    assert generated == generate_fleet(machines=30, subscriptions=2, seed=4)
    path = tmp_path / "s.json"
    path.write_text(json.dumps(scenario({"name": "x"})), encoding="utf-8")
    assert fleet_from_options(scenario=path).machines[0].name == "x"
    with pytest.raises(ScenarioError, match="cannot be combined"):
        fleet_from_options(machines=3, scenario=path)
