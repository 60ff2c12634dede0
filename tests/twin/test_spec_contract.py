"""The contract itself: the vendored spec, the validator, the spec's example requests, script outputs."""

from __future__ import annotations

import copy
import dataclasses
import json
import re

import requests

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.twin import FleetTwin, load_scenario
from arc_hotpatch.twin import arm as twin_arm

from .helpers import SCRIPT_NAMES, MachineDriver, apply_changes_parameters, script_text
from .spec_contract import EXAMPLES, SpecContract

ONE_MACHINE = {"seed": 5, "groups": [{"machine": {"name": "myMachine", "resource_group": "myResourceGroup"}}]}


def _example(relative: str) -> dict:
    return json.loads((EXAMPLES / relative).read_text(encoding="utf-8"))


def test_validator_rejects_what_the_spec_does_not_allow(make_twin, contract: SpecContract):
    harness = make_twin(ONE_MACHINE)
    machine = MachineDriver(harness, "myMachine", resource_group="myResourceGroup")
    machine.get()
    body = next(r.body for r in harness.records if r.operation == "machines.get")
    ref = contract.definition_ref("Machine")
    assert contract.problems_for_definition(body, ref) == []

    typo = copy.deepcopy(body)
    typo["properties"]["osProfile"]["windowsConfiguration"]["patchSettings"]["status"] = {
        "hotpatchEnablementStaus": "Enabled"
    }
    wrong_enum = copy.deepcopy(body)
    wrong_enum["properties"]["status"] = "Online"
    no_location = copy.deepcopy(body)
    del no_location["location"]
    bad_date = copy.deepcopy(body)
    bad_date["properties"]["lastStatusChange"] = "yesterday"
    null_tags = copy.deepcopy(body)
    null_tags["tags"] = None
    for broken in (typo, wrong_enum, no_location, bad_date, null_tags):
        assert contract.problems_for_definition(broken, ref), broken


def test_contract_check_catches_a_twin_that_invents_properties(contract: SpecContract, monkeypatch):
    original = twin_arm.machine_resource

    def invented(*args, **kwargs):
        document = original(*args, **kwargs)
        document["properties"]["hotpatchReady"] = True
        return document

    monkeypatch.setattr("arc_hotpatch.twin.handlers.machines.machine_resource", invented)
    records: list = []
    with FleetTwin(load_scenario(ONE_MACHINE), VirtualClock(), response_observer=records.append) as twin:
        url = f"{twin.base_url}/subscriptions/{twin.subscription_ids[0]}/resourceGroups/myResourceGroup/providers/"
        requests.get(
            f"{url}Microsoft.HybridCompute/machines/myMachine?api-version=2025-01-13",
            headers={"Authorization": "Bearer t"},
            timeout=10,
        )
    problems = contract.all_problems(records)
    assert problems and "hotpatchReady" in problems[0]


def test_documented_statuses_and_headers_are_enforced(make_twin, contract: SpecContract):
    harness = make_twin(ONE_MACHINE)
    MachineDriver(harness, "myMachine", resource_group="myResourceGroup").enable_hotpatch("PUT")
    put = next(r for r in harness.records if r.operation == "licenseProfiles.put")
    assert contract.response_problems(put) == []
    undocumented = dataclasses.replace(put, status=202)
    assert "not documented" in contract.response_problems(undocumented)[0]
    headerless = dataclasses.replace(put, headers={})
    assert any("Azure-AsyncOperation" in p for p in contract.response_problems(headerless))


def test_the_specs_own_example_requests_are_accepted(make_twin):
    harness = make_twin(ONE_MACHINE)
    client = harness.client()
    create = _example("licenseProfile/LicenseProfile_CreateOrUpdate.json")["parameters"]["parameters"]
    created = client.license_profiles.begin_create_or_update("myResourceGroup", "myMachine", create).result()
    assert created.properties.esu_profile.assigned_license == "{LicenseResourceId}"
    update = _example("licenseProfile/LicenseProfile_Update.json")["parameters"]["parameters"]
    updated = client.license_profiles.begin_update("myResourceGroup", "myMachine", update).result()
    assert updated.properties.software_assurance.software_assurance_customer is True
    # The example sets the top-level productProfile.subscriptionStatus: Windows Server pay-as-you-go (billed).
    assert harness.twin.machine("myMachine").payg_enrolled

    run = _example("runCommand/RunCommands_CreateOrUpdate.json")["parameters"]["runCommandProperties"]
    result = client.machine_run_commands.begin_create_or_update("myResourceGroup", "myMachine", "myRunCommand", run)
    view = result.result().properties.instance_view
    assert view.execution_state == "Succeeded" and view.output == ""  # not one of our scripts
    patch = _example("runCommand/RunCommands_Update.json")["parameters"]["runCommandProperties"]
    response = requests.patch(
        f"{harness.url}/subscriptions/{harness.twin.subscription_ids[0]}/resourceGroups/myResourceGroup/providers/"
        "Microsoft.HybridCompute/machines/myMachine/runCommands/myRunCommand?api-version=2025-01-13",
        json=patch,
        headers={"Authorization": "Bearer t"},
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["tags"] == patch["tags"]
    fetched = client.machine_run_commands.get("myResourceGroup", "myMachine", "myRunCommand")
    assert "runAsPassword" not in fetched.properties  # a secret is never echoed


def _ordered_keys(script: str) -> list[str]:
    """The keys of the ``[ordered]@{ ... }`` hashtable a script prints last."""
    block = script_text(script).rsplit("[ordered]@{", 1)[1].split("}", 1)[0]
    return re.findall(r"(\w+)\s*=", block)


def test_script_outputs_have_the_scripts_keys_in_order(make_twin):
    harness = make_twin({"seed": 1, "groups": [{"machine": {"name": "m", "vbs_status": 0}}]})
    machine = MachineDriver(harness, "m")
    outputs = [("readiness", machine.readiness()), ("apply_changes", machine.apply_changes(30, enable_vsm=1))]
    harness.sleep(30 * 60)
    name = machine.start_run("apply_changes", apply_changes_parameters("w", apply_workaround=1))
    harness.sleep(120)
    lost = next(r for r in harness.twin.machine("m").runs if r.name == name)
    assert lost.result_lost
    outputs.append(("apply_changes", json.loads(lost.unreported_output)))  # the workaround's, never reported
    for script, document in outputs:
        assert list(document) == _ordered_keys(script), script
        assert document["script"] == script
    assert set(SCRIPT_NAMES) == {script for script, _ in outputs}
