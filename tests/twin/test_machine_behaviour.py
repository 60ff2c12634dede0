"""Each scenario attribute of SPEC §5 makes the machine behave as the seed procedure describes.

Everything goes through the real SDK: Run Command with our real scripts, the license
profile, the machine's instance view; the twin's Python inspection API is used only
for what Azure cannot show (a result that never arrived, a registry value).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import pytest
from azure.core.exceptions import HttpResponseError

from arc_hotpatch.twin.scripts import OUTPUT_LIMIT_BYTES, keep_last_4kb

from .helpers import MachineDriver, TwinHarness, apply_changes_parameters


def one(**attributes: Any) -> dict[str, Any]:
    return {"seed": 21, "groups": [{"machine": {"name": "m", **attributes}}]}


def machine(make_twin, **attributes: Any) -> tuple[TwinHarness, MachineDriver]:
    harness = make_twin(one(**attributes))
    return harness, MachineDriver(harness, "m")


def reboot_and_wait(driver: MachineDriver, enable_vsm: int = 0) -> dict[str, Any]:
    return driver.wait_back_after(driver.apply_changes(enable_vsm=enable_vsm))


def enablement_seconds(harness: TwinHarness, driver: MachineDriver, within_s: float = 3600) -> float:
    return harness.wait_for(lambda: driver.hotpatch_status()[0] != "Enabling", within_s=within_s, step_s=30)


def test_default_machine_has_the_licensing_bug_until_workaround_and_reboot(make_twin):
    harness, driver = machine(make_twin)
    facts = driver.readiness()
    assert (facts["build"], facts["ubr"], facts["edition_id"]) == (26100, 6899, "ServerDatacenter")
    assert facts["licensing_override"] is None and facts["license_mutex"] is True
    assert facts["vbs_status"] == 2 and facts["himds"] == "Running" and facts["hotfixes"] == ["KB5066835"]

    driver.enable_hotpatch()
    harness.sleep(60 * 60)
    assert driver.hotpatch_status() == ("Enabling", "PendingEvaluation")  # the October 2025 issue

    name = driver.start_run("apply_changes", apply_changes_parameters("w", apply_workaround=1, delay_s=60))
    harness.wait_for(lambda: driver.status() == "Disconnected", within_s=300, step_s=10)
    harness.wait_for(lambda: driver.status() == "Connected", within_s=900, step_s=30)
    booted = harness.twin.machine("m").last_boot
    after = driver.readiness()
    assert after["licensing_override"] == 1 and after["license_mutex"] is False
    assert after["last_boot"] == booted.strftime("%Y-%m-%dT%H:%M:%SZ")

    enablement_seconds(harness, driver)
    assert driver.hotpatch_status() == ("Enabled", "Enabled")
    enabled_after_boot = (harness.clock.now() - booted).total_seconds()
    assert 10 * 60 <= enabled_after_boot <= 11 * 60  # enable_minutes after the fix became active
    # Stopping himds cut the workaround run off: its result never arrives.
    assert driver.run_view(name).execution_state == "Running"
    state = harness.twin.machine("m")
    assert state.reboots == 1 and next(r for r in state.runs if r.name == name).result_lost


def test_licensing_bug_false_enables_after_enable_minutes(make_twin):
    harness, driver = machine(make_twin, licensing_bug=False, enable_minutes=3)
    driver.enable_hotpatch()
    assert driver.hotpatch_status() == ("Enabling", "PendingEvaluation")
    waited = enablement_seconds(harness, driver)
    assert 3 * 60 <= waited <= 4 * 60 and driver.hotpatch_status() == ("Enabled", "Enabled")


def test_workaround_applied_machine_enables_without_action(make_twin):
    harness, driver = machine(make_twin, workaround_applied=True)
    facts = driver.readiness()
    assert facts["licensing_override"] == 1 and facts["license_mutex"] is False
    driver.enable_hotpatch()
    assert 10 * 60 <= enablement_seconds(harness, driver) <= 11 * 60
    assert driver.hotpatch_status()[0] == "Enabled"


def test_vsm_off_enable_vsm_and_reboot_makes_it_run(make_twin):
    _, driver = machine(make_twin, vbs_status=0)
    facts = driver.readiness()
    assert facts["vbs_status"] == 0 and facts["vbs_configured"] is None
    output = driver.apply_changes(delay_s=600, enable_vsm=1, request_id="v")
    assert output == {
        "v": 1,
        "script": "apply_changes",
        "request_id": "v",
        "vbs_configured": 1,
        "licensing_override": None,
        "mutex_removed": False,
        "reboot_in_s": 600,
        "requested_at": output["requested_at"],
    }
    before_boot = driver.readiness()
    # the registry value takes effect at the next boot
    assert (before_boot["vbs_configured"], before_boot["vbs_status"]) == (1, 0)
    assert driver.wait_back_after(output)["vbs_status"] == 2


def test_vbs_status_1_runs_after_a_reboot(make_twin):
    _, driver = machine(make_twin, vbs_status=1)
    facts = driver.readiness()
    assert (facts["vbs_status"], facts["vbs_configured"]) == (1, 1)
    assert reboot_and_wait(driver)["vbs_status"] == 2


@pytest.mark.parametrize(
    ("attributes", "firmware", "secure_boot"),
    [
        ({"uefi": False}, "BIOS", False),
        ({"uefi": False, "secure_boot": True}, "BIOS", False),  # Confirm-SecureBootUEFI fails on BIOS
        ({"secure_boot": False, "vbs_status": 0}, "UEFI", False),
        ({"vbs_status": 0, "vsm_starts": False}, "UEFI", True),
    ],
)
def test_vsm_never_starts_without_uefi_secure_boot_or_cooperating_hardware(
    make_twin, attributes, firmware, secure_boot
):
    _, driver = machine(make_twin, **attributes)
    facts = driver.readiness()
    assert (facts["firmware"], facts["secure_boot"], facts["vbs_status"]) == (firmware, secure_boot, 0)
    firmware_type = driver.get().properties.firmware_profile.type
    assert firmware_type == ("UEFI" if firmware == "UEFI" else "BIOS")
    after = reboot_and_wait(driver, enable_vsm=1)
    assert (after["vbs_configured"], after["vbs_status"]) == (1, 1)  # configured, not running


def test_enabling_hotpatch_without_vsm_fails(make_twin):
    harness, driver = machine(make_twin, vbs_status=0, licensing_bug=False)
    driver.enable_hotpatch()
    enablement_seconds(harness, driver)
    assert driver.hotpatch_status() == ("Failed", "ActionRequired")
    status = driver.get().properties.os_profile.windows_configuration.patch_settings.status
    assert status.error.code == "VirtualSecureModeNotRunning"


def test_hotpatch_enabled_attribute(make_twin):
    _, driver = machine(make_twin, hotpatch="Enabled")
    assert driver.hotpatch_status() == ("Enabled", "Enabled")
    assert driver.get().properties.os_profile.windows_configuration.patch_settings.enable_hotpatching is True
    profile = driver.enable_hotpatch()  # asking again changes nothing
    assert [f.subscription_status for f in profile.properties.product_profile.product_features] == ["Enabled"]


@pytest.mark.parametrize(("outcome", "expected"), [("fail", ("Failed", "ActionRequired")), ("stuck", None)])
def test_enable_outcome(make_twin, outcome, expected):
    harness, driver = machine(make_twin, enable_outcome=outcome, workaround_applied=True)
    driver.enable_hotpatch()
    if expected is None:
        harness.sleep(3 * 3600)
        assert driver.hotpatch_status() == ("Enabling", "PendingEvaluation")
    else:
        assert 10 * 60 <= enablement_seconds(harness, driver) <= 11 * 60
        assert driver.hotpatch_status() == expected


def test_disabling_hotpatch(make_twin):
    harness, driver = machine(make_twin, hotpatch="Enabled")
    body = {
        "properties": {"productProfile": {"productFeatures": [{"name": "Hotpatch", "subscriptionStatus": "Disable"}]}}
    }
    driver.client.license_profiles.begin_update("rg-arc-servers", "m", body).result()
    assert driver.hotpatch_status()[0] == "Disabling"
    harness.sleep(150)
    assert driver.hotpatch_status() == ("Disabled", "Disabled")


def test_reboot_minutes_keep_the_agent_disconnected_meanwhile(make_twin):
    harness, driver = machine(make_twin, reboot_minutes=12)
    before = driver.get().properties.last_status_change
    output = driver.apply_changes(delay_s=60)
    assert output["reboot_in_s"] == 60
    assert driver.status() == "Connected"  # the run reports before the restart
    down = harness.wait_for(lambda: driver.status() == "Disconnected", within_s=120, step_s=5)
    assert 30 <= down <= 65
    went_down = driver.get().properties.last_status_change
    assert went_down > before
    harness.sleep(11 * 60)
    assert driver.status() == "Disconnected"
    harness.sleep(2 * 60)
    properties = driver.get().properties
    assert properties.status == "Connected" and properties.last_status_change - went_down == timedelta(minutes=12)
    assert driver.readiness()["last_boot"] > output["requested_at"]


def test_reboot_hangs(make_twin):
    harness, driver = machine(make_twin, reboot_hangs=True)
    driver.apply_changes(delay_s=30)
    harness.sleep(4 * 3600)
    assert driver.status() == "Disconnected"
    name = driver.start_run("readiness", {"RequestId": "r"})
    harness.sleep(600)
    assert driver.run_view(name).execution_state == "Pending"  # nobody there to pick it up


RUN_COMMAND = ("Microsoft.CPlat.Core", "RunCommandHandlerWindows")


@pytest.mark.parametrize(
    ("attributes", "shown", "refusal"),
    [
        ({"extensions_blocklist": ["Microsoft.CPlat.Core/RunCommandHandlerWindows"]},
         {"extensions_block_list": [RUN_COMMAND]}, "blocklist"),
        ({"extensions_allowlist": ["Microsoft.Azure.Monitor/AzureMonitorWindowsAgent"]},
         {"extensions_allow_list": [("Microsoft.Azure.Monitor", "AzureMonitorWindowsAgent")]}, "allowlist"),
        ({"extensions_enabled": False}, {"extensions_enabled": "false"}, "Extensions are disabled"),
        ({"agent_config_mode": "monitor"}, {"config_mode": "monitor"}, "monitor mode"),
        ({"agent_version": "1.30.02651.1187"}, {}, "requires Connected Machine agent 1.33"),
        ({"run_command_fails": True}, {}, "failed to start"),  # a failure ARM's view of the agent does not show
    ],
    ids=["blocklist", "allowlist", "extensions-disabled", "monitor-mode", "agent-too-old", "run-command-fails"],
)
def test_run_command_is_refused_as_the_agent_is_configured_and_arm_shows_that_configuration(
        make_twin, attributes, shown, refusal):
    _, driver = machine(make_twin, **attributes)
    properties = driver.get().properties
    configuration = properties.agent_configuration
    for field, value in shown.items():
        got = getattr(configuration, field)
        assert ([(e.publisher, e.type) for e in got] if isinstance(got, list) else got) == value
    if "agent_version" in attributes:
        assert properties.agent_version == attributes["agent_version"]
    with pytest.raises(HttpResponseError) as failure:
        driver.run("readiness", {"RequestId": "r"})
    assert refusal in str(failure.value)
    name = driver.client.machine_run_commands.list("rg-arc-servers", "m").next().name
    view = driver.run_view(name)
    assert view.execution_state == "Failed" and refusal in view.error


def test_a_default_agent_is_current_with_run_command_allowed(make_twin):
    _, driver = machine(make_twin)
    properties = driver.get().properties
    configuration = properties.agent_configuration
    assert tuple(int(p) for p in properties.agent_version.split(".")[:2]) >= (1, 33)
    assert (configuration.extensions_enabled, configuration.config_mode) == ("true", "full")
    assert not configuration.extensions_block_list and not configuration.extensions_allow_list


@pytest.mark.parametrize("status", ["Disconnected", "Error"])
def test_agent_status_not_connected(make_twin, status):
    harness, driver = machine(make_twin, status=status)
    properties = driver.get().properties
    assert properties.status == status
    assert (properties.error_details is not None) == (status == "Error")
    name = driver.start_run("readiness", {"RequestId": "r"})
    harness.sleep(3600)
    assert driver.run_view(name).execution_state == "Pending"


def test_tags_name_resource_group_and_subscription(make_twin):
    harness = make_twin(
        {
            "seed": 3,
            "subscriptions": 2,
            "groups": [
                {
                    "count": 2,
                    "machine": {
                        "name": "app",
                        "resource_group": "rg-apps",
                        "subscription": 1,
                        "tags": {"hotpatch": "exclude", "owner": "erp"},
                    },
                },
                {"machine": {"name": "solo"}},
            ],
        }
    )
    second = harness.client(1)
    names = sorted(m.name for m in second.machines.list_by_subscription())
    assert names == ["app-1", "app-2"]
    app = second.machines.get("rg-apps", "app-2")
    assert app.tags == {"hotpatch": "exclude", "owner": "erp"}
    assert app.id == (
        f"/subscriptions/{harness.twin.subscription_ids[1]}/resourceGroups/rg-apps/providers/"
        "Microsoft.HybridCompute/machines/app-2"
    )
    assert [m.name for m in harness.client(0).machines.list_by_subscription()] == ["solo"]


@pytest.mark.parametrize(
    ("os_sku", "os_version", "edition", "mutex"),
    [
        ("Windows Server 2025 Standard", "10.0.26100.6899", "ServerStandard", True),
        ("Windows Server 2025 Datacenter: Azure Edition", "10.0.26100.6899", "ServerAzureEdition", False),
        ("Windows Server 2025 Datacenter", "10.0.26100.4946", "ServerDatacenter", False),
        ("Windows Server 2022 Datacenter", "10.0.20348.4294", "ServerDatacenter", False),
        ("Windows Server 2025 Essentials", "10.0.26100.6899", "ServerEssentials", True),
    ],
)
def test_os_sku_and_version_in_arm_and_on_the_machine(make_twin, os_sku, os_version, edition, mutex):
    _, driver = machine(make_twin, os_sku=os_sku, os_version=os_version)
    properties = driver.get().properties
    assert (properties.os_sku, properties.os_version, properties.os_type) == (os_sku, os_version, "windows")
    facts = driver.readiness()
    build, revision = (int(x) for x in os_version.split(".")[2:])
    assert (facts["build"], facts["ubr"], facts["edition_id"], facts["product_name"]) == (
        build,
        revision,
        edition,
        os_sku,
    )
    assert facts["license_mutex"] is mutex  # licensing_bug defaults from the revision and the edition


def test_the_two_6905_updates_are_told_apart_by_hotfix(make_twin):
    harness = make_twin(
        {"seed": 4, "groups": [{"count": 12, "machine": {"name": "m", "os_version": "10.0.26100.6905"}}]}
    )
    seen = {tuple(MachineDriver(harness, f"m-{i}").readiness()["hotfixes"]) for i in range(1, 13)}
    assert seen == {("KB5070893",), ("KB5070881",)}


def test_hotpatch_fails_on_an_unsupported_os(make_twin):
    harness, driver = machine(make_twin, os_sku="Windows Server 2022 Datacenter", os_version="10.0.20348.4294")
    driver.enable_hotpatch()
    enablement_seconds(harness, driver)
    assert driver.hotpatch_status() == ("Failed", "ActionRequired")


def test_non_windows_machine(make_twin):
    _, driver = machine(make_twin, os_sku="Ubuntu 22.04.5 LTS", os_version="5.15.0")
    properties = driver.get().properties
    assert (properties.os_type, properties.os_name) == ("linux", "linux")
    assert properties.os_profile.linux_configuration is not None and properties.license_profile is None
    view = driver.run("readiness", {"RequestId": "r"}).properties.instance_view
    assert view.execution_state == "Failed" and view.exit_code == 2
    assert driver.run("echo hello").properties.instance_view.execution_state == "Succeeded"


def test_apply_changes_refuses_a_second_pending_restart(make_twin):
    harness, driver = machine(make_twin)
    driver.apply_changes(delay_s=600)
    parameters = apply_changes_parameters("again", apply_workaround=1)
    view = driver.run("apply_changes", parameters).properties.instance_view
    assert (view.execution_state, view.exit_code) == ("Failed", 1)
    assert "shutdown.exe failed with exit code 1190" in view.error
    state = harness.twin.machine("m")  # it failed before the workaround: himds still reports
    assert state.himds == "Running" and state.licensing_override is None and state.license_mutex


@pytest.mark.parametrize(
    ("script", "parameters", "message"),
    [
        ("readiness", {"RequestId": "r", "Verbose2": "1"}, "A parameter cannot be found that matches parameter name"),
        ("apply_changes", {"RebootDelaySeconds": "soon"}, 'Cannot convert value "soon" to type "System.Int32"'),
        ("apply_changes", {"ApplyWorkaround": "1", "RebootDelaySeconds": "-1"}, "RebootDelaySeconds must be >= 0"),
    ],
)
def test_script_parameter_errors_fail_like_powershell(make_twin, script, parameters, message):
    harness, driver = machine(make_twin)
    view = driver.run(script, parameters).properties.instance_view
    assert (view.execution_state, view.exit_code, view.output) == ("Failed", 1, "")
    assert message in view.error
    state = harness.twin.machine("m")
    assert state.reboots == 0 and state.licensing_override is None and state.scheduled_reboot_at is None


def test_parameter_names_bind_case_insensitively(make_twin):
    _, driver = machine(make_twin)
    view = driver.run("apply_changes", {"requestid": "x", "enableVSM": "1", "REBOOTDELAYSECONDS": "90"})
    output = json.loads(view.properties.instance_view.output)
    assert (output["request_id"], output["vbs_configured"], output["reboot_in_s"]) == ("x", 1, 90)


def test_timeout_and_async_execution(make_twin):
    harness, driver = machine(make_twin)
    timed_out = driver.run("readiness", {"RequestId": "t"}, timeoutInSeconds=5).properties.instance_view
    assert timed_out.execution_state == "TimedOut"
    started = driver.run("readiness", {"RequestId": "a"}, asyncExecution=True)
    assert started.properties.provisioning_state == "Succeeded"
    assert started.properties.instance_view.execution_state == "Running"  # async: done once it started
    harness.sleep(60)
    assert driver.run_view(started.name).execution_state == "Succeeded"


def test_a_lost_result_fails_the_lro_only_after_the_timeout(make_twin):
    harness, driver = machine(make_twin)
    started = harness.clock.now()
    with pytest.raises(HttpResponseError) as failure:
        driver.run("apply_changes", apply_changes_parameters("w", apply_workaround=1), timeoutInSeconds=60)
    assert "OperationTimedOut" in str(failure.value)
    assert (harness.clock.now() - started).total_seconds() >= 60 + 300
    name = driver.client.machine_run_commands.list("rg-arc-servers", "m").next().name
    assert driver.run_view(name).execution_state == "Running"


def test_output_keeps_the_last_4_kb():
    text = "x" * 5000 + '{"v":1}'
    kept = keep_last_4kb(text)
    assert len(kept.encode()) == OUTPUT_LIMIT_BYTES and kept.endswith('{"v":1}')
    assert keep_last_4kb("short") == "short"
    assert keep_last_4kb("é" * 3000).startswith("é")  # never a broken character


@pytest.mark.parametrize("pending", [False, True])
def test_assess_patches_is_a_long_running_operation_the_sdk_polls_to_its_result(make_twin, pending):
    harness, driver = machine(make_twin, reboot_pending=pending)
    result = harness.lro_result(partial(driver.client.machines.begin_assess_patches, "rg-arc-servers", "m"),
                                within_s=600)
    assert (result.status, result.reboot_pending, result.os_type) == ("Succeeded", pending, "Windows")
    assert result.available_patch_count_by_classification.security is not None
    operations = harness.twin.metrics()["arm_requests_by_operation"]
    assert operations["machines.assessPatches"] == 1 and operations["operationResults.get"] >= 1


def test_a_servicing_reboot_pending_shows_in_readiness_until_the_next_boot(make_twin):
    _, driver = machine(make_twin, reboot_pending=True)
    assert driver.readiness()["reboot_pending"] == ["component_servicing"]
    assert reboot_and_wait(driver)["reboot_pending"] == []


def test_action_required_licenses_the_feature_and_reports_the_machine_level_with_an_error(make_twin):
    harness, driver = machine(make_twin, enable_outcome="action_required", workaround_applied=True)
    driver.enable_hotpatch()
    enablement_seconds(harness, driver)
    settings = driver.get().properties.os_profile.windows_configuration.patch_settings
    assert driver.hotpatch_status()[0] == "Enabled"
    assert settings.status.hotpatch_enablement_status == "ActionRequired"
    assert settings.status.error.code == "HotpatchActionRequired"


def test_the_readiness_script_reports_only_the_kbs_it_is_asked_about_and_its_firmware_signal(make_twin):
    _, driver = machine(make_twin, os_version="10.0.26100.32230")

    def readiness(kbs: str) -> dict:
        run = driver.run("readiness", {"RequestId": kbs, "RelevantKbs": kbs})
        return json.loads(run.properties.instance_view.output)

    asked = readiness("KB5073379,KB5066835")
    assert (asked["hotfixes"], asked["firmware_signal"]) == (["KB5073379"], "GetFirmwareType")
    assert readiness("KB5066835")["hotfixes"] == []


def _install(harness, driver, **parameters):
    windows = {"classificationsToInclude": ["Critical", "Security"], "excludeKbsRequiringReboot": True}
    body = {"maximumDuration": "PT2H", "rebootSetting": "Never", "windowsParameters": windows} | parameters
    return harness.lro_result(partial(driver.client.machines.begin_install_patches, "rg-arc-servers", "m", body),
                              within_s=1800)


PATCH_TUESDAY = datetime(2026, 2, 10, 9, tzinfo=UTC)
ENROLLED_ON_JANUARY_2026 = {"os_version": "10.0.26100.32230", "hotpatch": "Enabled", "workaround_applied": True}


def test_install_patches_installs_the_months_hotpatches_once_without_a_reboot(make_twin, virtual_clock):
    harness, driver = machine(make_twin, **ENROLLED_ON_JANUARY_2026)
    harness.sleep((PATCH_TUESDAY - virtual_clock.now()).total_seconds())  # February 2026's Patch Tuesday
    boots = len(harness.twin.machine("m").boot_times)
    first = _install(harness, driver)
    assert (first.status, first.installed_patch_count, first.pending_patch_count, first.reboot_status) == (
        "Succeeded", 2, 0, "NotNeeded")
    again = _install(harness, driver)
    assert (again.installed_patch_count, again.pending_patch_count) == (0, 0)  # nothing left to install
    assert len(harness.twin.machine("m").boot_times) == boots


@pytest.mark.parametrize("attributes", [{}, {**ENROLLED_ON_JANUARY_2026, "reboot_pending": True}],
                         ids=["off-baseline-not-enrolled", "reboot-pending"])
def test_install_patches_leaves_what_needs_a_reboot_pending_and_never_reboots_when_told(make_twin, virtual_clock,
                                                                                       attributes):
    harness, driver = machine(make_twin, **attributes)
    harness.sleep((PATCH_TUESDAY - virtual_clock.now()).total_seconds())
    result = _install(harness, driver)
    assert (result.installed_patch_count, result.pending_patch_count, result.reboot_status) == (0, 1, "Required")
    assert harness.twin.machine("m").scheduled_reboot_at is None and harness.twin.machine("m").reboots == 0


def test_install_patches_reboots_when_the_body_allows_it(make_twin, virtual_clock):
    harness, driver = machine(make_twin)  # the trap the app's body avoids: IfRequired without the KB exclusion
    result = _install(harness, driver, rebootSetting="IfRequired", windowsParameters={})
    assert result.reboot_status == "Started"
    # The scheduled restart comes a minute after the operation ends: move past it, whenever the poller saw the end.
    harness.sleep(120)
    assert harness.twin.machine("m").reboots == 1  # it rebooted


@pytest.mark.parametrize(("body", "named"), [({"rebootSetting": "Never"}, "maximumDuration"),
                                             ({"maximumDuration": "PT2H", "rebootSetting": "NeverReboot"},
                                              "rebootSetting")])
def test_install_patches_refuses_a_body_the_spec_does_not_allow(make_twin, body, named):
    _, driver = machine(make_twin)
    with pytest.raises(HttpResponseError) as refused:
        driver.client.machines.begin_install_patches("rg-arc-servers", "m", body, polling=False)
    assert refused.value.status_code == 400 and named in str(refused.value)
