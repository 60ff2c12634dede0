"""Every ARM operation the twin serves, through the real SDK clients (plain HTTP for error cases)."""

from __future__ import annotations

import json
import time
from collections import Counter

import pytest
import requests
from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError
from azure.mgmt.hybridcompute import HybridComputeManagementClient

from arc_hotpatch.twin import generate_fleet, machine_spec
from core.azure_clients import subscription_client

from .helpers import MachineDriver, script_text

SCENARIO = {
    "seed": 11,
    "subscriptions": 2,
    "groups": [
        {"count": 3, "machine": {"name": "ready"}},
        {"machine": {"name": "esu", "esu_profile": True, "resource_group": "rg-esu"}},
        {"machine": {"name": "linux", "os_sku": "Ubuntu 22.04.5 LTS", "os_version": "5.15.0"}},
        {"machine": {"name": "other-sub", "subscription": 1}},
    ],
}
AUTH = {"Authorization": "Bearer anything"}
API = "api-version=2025-01-13"


def _ops(harness, operation: str) -> list:
    return [r for r in harness.records if r.operation == operation]


def test_subscriptions_list(make_twin):
    harness = make_twin(SCENARIO)
    subscriptions = list(subscription_client(harness.connection).subscriptions.list())
    assert [s.subscription_id for s in subscriptions] == list(harness.twin.subscription_ids)
    assert {s.tenant_id for s in subscriptions} == {harness.twin.fleet.tenant_id}
    assert all(s.state == "Enabled" for s in subscriptions)
    assert _ops(harness, "subscriptions.list")[0].query["api-version"] == "2022-12-01"


def test_machine_lists_are_paged_with_next_link(make_twin):
    harness = make_twin(generate_fleet(machines=23, subscriptions=1, seed=3), page_size=5)
    client = harness.client()
    machines = list(client.machines.list_by_subscription())
    assert len(machines) == 23 == len({m.id for m in machines})
    pages = _ops(harness, "machines.list_by_subscription")
    assert len(pages) == 5
    assert all("nextLink" in p.body for p in pages[:-1]) and "nextLink" not in pages[-1].body
    assert pages[0].body["nextLink"].startswith(harness.url + "/subscriptions/")

    groups = {m.id.split("/")[4] for m in machines}
    by_group = [m for g in sorted(groups) for m in client.machines.list_by_resource_group(g, expand="instanceView")]
    assert sorted(m.id for m in by_group) == sorted(m.id for m in machines)
    windows = [m for m in by_group if m.properties.os_type == "windows"]
    assert windows and all(m.properties.license_profile is not None for m in windows)
    next_links = [p.body.get("nextLink", "") for p in _ops(harness, "machines.list_by_resource_group")]
    assert any("%24expand=instanceView" in link or "$expand=instanceView" in link for link in next_links if link)


def test_machine_get_with_and_without_instance_view(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "ready-1")
    plain = driver.get(instance_view=False)
    assert plain.properties.os_sku == "Windows Server 2025 Datacenter"
    assert plain.properties.os_version == "10.0.26100.6899"
    assert plain.properties.os_type == "windows" and plain.properties.status == "Connected"
    assert plain.properties.agent_version and plain.properties.last_status_change
    assert plain.properties.license_profile is None
    assert plain.properties.os_profile.windows_configuration.patch_settings.status is None

    expanded = driver.get(instance_view=True)
    assert expanded.properties.license_profile.license_status == "Licensed"
    status = expanded.properties.os_profile.windows_configuration.patch_settings.status
    assert status.hotpatch_enablement_status == "Disabled"

    linux = MachineDriver(harness, "linux").get()
    assert linux.properties.os_type == "linux" and linux.properties.license_profile is None


def test_license_profile_put_creates_then_updates_as_long_running_operations(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "ready-1")
    assert driver.license_profile() is None
    started = harness.clock.now()
    profile = driver.enable_hotpatch("PUT")
    assert profile.properties.provisioning_state == "Succeeded"
    assert [(f.name, f.subscription_status) for f in profile.properties.product_profile.product_features] == [
        ("Hotpatch", "Enabling")
    ]
    put = _ops(harness, "licenseProfiles.put")[0]
    assert put.status == 201
    assert {"Azure-AsyncOperation", "Location", "Retry-After"} <= set(put.headers)
    polls = _ops(harness, "operationStatus.get")
    assert [p.body["status"] for p in polls][-1] == "Succeeded" and len(polls) >= 2
    assert (harness.clock.now() - started).total_seconds() >= int(put.headers["Retry-After"])

    driver.enable_hotpatch("PUT")
    assert _ops(harness, "licenseProfiles.put")[1].status == 200
    listed = list(driver.client.license_profiles.list("rg-arc-servers", "ready-1"))
    assert [p.name for p in listed] == ["default"]


def test_put_drops_the_esu_profile_and_patch_keeps_it(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "esu", resource_group="rg-esu")
    before = driver.license_profile()
    assert before.properties.esu_profile.assigned_license
    assert [f.name for f in before.properties.product_profile.product_features] == ["WindowsServerAzureArcMgmt"]

    # PATCH with the merged feature list keeps the ESU assignment and the other feature.
    patched = driver.enable_hotpatch("PATCH")
    assert _ops(harness, "licenseProfiles.patch")[0].status == 202
    assert patched.properties.esu_profile.assigned_license == before.properties.esu_profile.assigned_license
    assert [f.name for f in patched.properties.product_profile.product_features] == [
        "WindowsServerAzureArcMgmt",
        "Hotpatch",
    ]

    # A naive PUT of just the Hotpatch feature replaces the whole profile: ESU and the other feature are gone.
    naive = {
        "location": driver.location,
        "properties": {
            "productProfile": {
                "productType": "WindowsServer",
                "productFeatures": [{"name": "Hotpatch", "subscriptionStatus": "Enable"}],
            }
        },
    }
    after = driver.client.license_profiles.begin_create_or_update("rg-esu", "esu", naive).result()
    assert after.properties.esu_profile.assigned_license is None
    assert after.properties.software_assurance is None
    assert [f.name for f in after.properties.product_profile.product_features] == ["Hotpatch"]
    write = harness.twin.machine("esu").license_writes[-1]
    assert (
        write.method == "PUT" and write.dropped_esu_license and write.dropped_features == ("WindowsServerAzureArcMgmt",)
    )
    assert harness.twin.machine("esu").payg_enrolled is False


def test_patch_with_a_partial_feature_list_replaces_the_list(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "esu", resource_group="rg-esu")
    body = {
        "properties": {"productProfile": {"productFeatures": [{"name": "Hotpatch", "subscriptionStatus": "Enable"}]}}
    }
    result = driver.client.license_profiles.begin_update("rg-esu", "esu", body).result()
    assert [f.name for f in result.properties.product_profile.product_features] == ["Hotpatch"]
    assert result.properties.esu_profile.assigned_license  # merge patch: untouched properties stay
    assert harness.twin.machine("esu").license_writes[-1].dropped_features == ("WindowsServerAzureArcMgmt",)


def test_license_profile_delete_is_long_running_and_idempotent(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "esu", resource_group="rg-esu")
    driver.client.license_profiles.begin_delete("rg-esu", "esu").result()
    assert driver.license_profile() is None
    driver.client.license_profiles.begin_delete("rg-esu", "esu").result()
    assert [r.status for r in _ops(harness, "licenseProfiles.delete")] == [202, 204]
    with pytest.raises(ResourceNotFoundError):
        driver.client.license_profiles.begin_update("rg-esu", "esu", {"properties": {}}).result()


def test_run_command_put_get_list_delete(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "ready-2")
    client = driver.client
    result = driver.run("readiness", {"RequestId": "r-1"})
    view = result.properties.instance_view
    assert result.properties.provisioning_state == "Succeeded"
    assert view.execution_state == "Succeeded" and view.exit_code == 0
    assert json.loads(view.output)["request_id"] == "r-1"
    assert view.start_time < view.end_time
    assert _ops(harness, "runCommands.put")[0].status == 201

    name = result.name
    fetched = client.machine_run_commands.get("rg-arc-servers", "ready-2", name)
    assert fetched.properties.instance_view.output == view.output
    assert fetched.properties.protected_parameters == []

    listed = list(client.machine_run_commands.list("rg-arc-servers", "ready-2", expand="instanceView"))
    assert [r.name for r in listed] == [name] and listed[0].properties.instance_view.execution_state == "Succeeded"
    bare = list(client.machine_run_commands.list("rg-arc-servers", "ready-2"))
    assert bare[0].properties.instance_view is None

    client.machine_run_commands.begin_delete("rg-arc-servers", "ready-2", name).result()
    with pytest.raises(ResourceNotFoundError):
        client.machine_run_commands.get("rg-arc-servers", "ready-2", name)
    client.machine_run_commands.begin_delete("rg-arc-servers", "ready-2", name).result()
    assert [r.status for r in _ops(harness, "runCommands.delete")] == [202, 204]


def test_run_command_patch_updates_tags(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "ready-1")
    name = driver.start_run("readiness", {"RequestId": "x"})
    response = requests.patch(
        f"{harness.url}/subscriptions/{harness.twin.subscription_ids[0]}/resourceGroups/rg-arc-servers/providers/"
        f"Microsoft.HybridCompute/machines/ready-1/runCommands/{name}?{API}",
        json={"tags": {"owner": "ops"}},
        headers=AUTH,
        timeout=10,
    )
    assert response.status_code == 200 and response.json()["tags"] == {"owner": "ops"}


def test_reusing_a_run_command_name_while_it_runs_is_a_conflict(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "ready-1")
    name = driver.start_run("readiness", {"RequestId": "a"}, name="probe")
    with pytest.raises(ResourceExistsError) as conflict:
        driver.start_run("readiness", {"RequestId": "b"}, name="probe")
    assert conflict.value.status_code == 409 and "in progress" in conflict.value.message
    harness.wait_for(lambda: driver.run_view(name).execution_state == "Succeeded", within_s=120, step_s=10)
    driver.start_run("readiness", {"RequestId": "c"}, name="probe")
    assert _ops(harness, "runCommands.put")[-1].status == 200  # replaced a finished run


def test_lro_polling_sleeps_on_the_virtual_clock(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "ready-1")
    wall = time.monotonic()
    virtual = harness.clock.now()
    result = driver.run("readiness", {"RequestId": "r"})
    elapsed = (harness.clock.now() - virtual).total_seconds()
    view = result.properties.instance_view
    run_seconds = (view.end_time - (harness.twin.started_at)).total_seconds()
    assert 20 <= run_seconds <= 40 and elapsed >= run_seconds
    polls = _ops(harness, "operationStatus.get")
    assert all(p.headers.get("Retry-After") == "10" for p in polls if p.body["status"] == "InProgress")
    assert len(polls) == pytest.approx(elapsed / 10, abs=1)
    assert time.monotonic() - wall < 10  # virtual seconds cost (almost) no real time


def test_missing_or_malformed_bearer_token_is_401(make_twin):
    harness = make_twin(SCENARIO)
    url = f"{harness.url}/subscriptions?api-version=2022-12-01"
    missing = requests.get(url, timeout=10)
    assert missing.status_code == 401
    assert missing.json()["error"]["code"] == "AuthenticationFailed"
    assert missing.headers["WWW-Authenticate"].startswith("Bearer ")
    basic = requests.get(url, headers={"Authorization": "Basic dXNlcjpwYXNz"}, timeout=10)
    assert basic.status_code == 401 and basic.json()["error"]["code"] == "InvalidAuthenticationToken"
    assert requests.get(url, headers=AUTH, timeout=10).status_code == 200


def test_not_found_errors_have_arm_codes(make_twin):
    harness = make_twin(SCENARIO)
    subscription = harness.twin.subscription_ids[0]
    base = f"{harness.url}/subscriptions/{subscription}"

    def get(path: str) -> tuple[int, str]:
        response = requests.get(f"{path}?{API}", headers=AUTH, timeout=10)
        return response.status_code, response.json()["error"]["code"]

    unknown_subscription = "00000000-0000-4000-8000-000000000000"
    assert get(f"{harness.url}/subscriptions/{unknown_subscription}/providers/Microsoft.HybridCompute/machines") == (
        404,
        "SubscriptionNotFound",
    )
    assert get(f"{harness.url}/subscriptions/not-a-guid/providers/Microsoft.HybridCompute/machines") == (
        400,
        "InvalidSubscriptionId",
    )
    assert get(f"{base}/resourceGroups/rg-nope/providers/Microsoft.HybridCompute/machines") == (
        404,
        "ResourceGroupNotFound",
    )
    machine = f"{base}/resourceGroups/rg-arc-servers/providers/Microsoft.HybridCompute/machines"
    assert get(f"{machine}/nope") == (404, "ResourceNotFound")
    assert get(f"{machine}/ready-1/runCommands/nope") == (404, "ResourceNotFound")
    assert get(f"{machine}/nope/runCommands/x") == (404, "ParentResourceNotFound")
    assert get(f"{machine}/ready-1/licenseProfiles/default") == (404, "ResourceNotFound")
    assert get(f"{machine}/ready-1/extensions") == (404, "InvalidResourceType")
    assert get(f"{base}/providers/Microsoft.Compute/virtualMachines") == (404, "InvalidResourceNamespace")
    assert get(f"{base}/providers/Microsoft.HybridCompute/locations/eastus/operationStatus/nope") == (
        404,
        "OperationNotFound",
    )
    with pytest.raises(ResourceNotFoundError):
        harness.client().machines.get("rg-arc-servers", "nope")
    # Resource names are case-insensitive in ARM.
    assert requests.get(f"{machine.upper()}/READY-1?{API}", headers=AUTH, timeout=10).status_code == 200


def test_api_versions(make_twin):
    harness = make_twin(SCENARIO)
    machines = (
        f"{harness.url}/subscriptions/{harness.twin.subscription_ids[0]}/providers/Microsoft.HybridCompute/machines"
    )

    def code(url: str) -> tuple[int, str]:
        response = requests.get(url, headers=AUTH, timeout=10)
        return response.status_code, response.json()["error"]["code"]

    assert code(machines) == (400, "MissingApiVersionParameter")
    assert code(f"{machines}?api-version=latest") == (400, "InvalidApiVersionParameter")
    assert code(f"{machines}?api-version=2024-07-10") == (400, "NoRegisteredProviderFound")
    assert code(f"{harness.url}/subscriptions?api-version=2099-01-01") == (400, "InvalidApiVersionParameter")

    # A later stable version (the SDK's own default, 2026-07-15) is served with the 2025-01-13 shapes.
    assert requests.get(f"{machines}?api-version=2026-07-15", headers=AUTH, timeout=10).status_code == 200
    assert code(f"{machines}?api-version=2026-07-15-preview") == (400, "NoRegisteredProviderFound")
    with HybridComputeManagementClient(
        harness.connection.credential, harness.twin.subscription_ids[0], base_url=harness.url,
        connection_verify=harness.twin.ca_file,
    ) as unpinned:
        assert unpinned._config.api_version > "2025-01-13"
        assert next(iter(unpinned.machines.list_by_subscription())).name


def test_invalid_request_bodies_are_400(make_twin):
    harness = make_twin(SCENARIO)
    machine = (
        f"{harness.url}/subscriptions/{harness.twin.subscription_ids[0]}/resourceGroups/rg-arc-servers/providers/"
        "Microsoft.HybridCompute/machines"
    )

    def put(path: str, body: object, method: str = "PUT") -> tuple[int, str]:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        response = requests.request(method, f"{machine}/{path}?{API}", data=data, headers=AUTH, timeout=10)
        return response.status_code, response.json()["error"]["code"]

    script = {"source": {"script": script_text("readiness")}}
    assert put("ready-1/runCommands/a", b"{not json") == (400, "InvalidRequestContent")
    assert put("ready-1/runCommands/a", {"properties": script}) == (400, "LocationRequired")
    both = {"location": "eastus", "properties": {"source": {"script": "x", "commandId": "RunPowerShellScript"}}}
    assert put("ready-1/runCommands/a", both) == (400, "InvalidParameter")
    bad_parameters = {"location": "eastus", "properties": {**script, "parameters": [{"name": "RequestId", "value": 1}]}}
    assert put("ready-1/runCommands/a", bad_parameters) == (400, "InvalidRequestContent")
    assert put("ready-1/runCommands/bad name!", {"location": "eastus", "properties": script}) == (
        400,
        "InvalidResourceName",
    )
    feature = {"productFeatures": [{"name": "Hotpatch", "subscriptionStatus": "On"}]}
    profile = {"location": "eastus", "properties": {"productProfile": {"productType": "WindowsServer", **feature}}}
    assert put("ready-1/licenseProfiles/default", profile) == (400, "InvalidParameter")
    no_type = {
        "location": "eastus",
        "properties": {"productProfile": {"productFeatures": [{"name": "Hotpatch", "subscriptionStatus": "Enable"}]}},
    }
    assert put("ready-1/licenseProfiles/default", no_type) == (400, "InvalidParameter")
    assert put("ready-1/licenseProfiles/other", {"location": "eastus"}) == (400, "InvalidParameter")
    assert put("linux/licenseProfiles/default", {"location": "eastus"}) == (400, "InvalidParameter")
    assert put("ready-1", {"location": "eastus"}) == (405, "MethodNotAllowed")
    assert harness.twin.machine("ready-1").license_writes == ()


def test_throttling_answers_429_and_the_sdk_retries_after_retry_after(make_twin):
    harness = make_twin(SCENARIO)
    client = harness.client()
    started = harness.clock.now()
    for _ in range(270):
        client.machines.get("rg-arc-servers", "ready-1")
    throttled = [r for r in harness.records if r.status == 429]
    assert throttled, "the 250-token read bucket should have run out"
    first = throttled[0]
    assert first.body["error"]["code"] == "SubscriptionRequestsThrottled"
    assert int(first.headers["Retry-After"]) >= 1
    assert first.headers["x-ms-ratelimit-remaining-subscription-reads"] == "0"
    gets = [r for r in harness.records if r.operation == "machines.get"]
    assert sum(r.status == 200 for r in gets) == 270  # every call succeeded after retrying
    assert (harness.clock.now() - started).total_seconds() >= int(first.headers["Retry-After"])
    remaining = [int(r.headers["x-ms-ratelimit-remaining-subscription-reads"]) for r in gets[:5]]
    assert remaining == sorted(remaining, reverse=True)
    assert harness.twin.metrics()["throttled_responses"] == len(throttled)


def test_write_bucket_is_separate_and_smaller(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "ready-1")
    name = driver.start_run("readiness", {"RequestId": "x"})
    url = (
        f"{harness.url}/subscriptions/{harness.twin.subscription_ids[0]}/resourceGroups/rg-arc-servers/providers/"
        f"Microsoft.HybridCompute/machines/ready-1/runCommands/{name}?{API}"
    )
    with requests.Session() as session:
        statuses = [session.patch(url, json={"tags": {}}, headers=AUTH, timeout=10).status_code for _ in range(205)]
        read = session.get(url, headers=AUTH, timeout=10)
    assert statuses.count(429) >= 5 and statuses[:150].count(429) == 0
    assert read.status_code == 200 and "x-ms-ratelimit-remaining-subscription-reads" in read.headers


def test_throttling_can_be_disabled(make_twin):
    harness = make_twin(SCENARIO, throttling=False)
    client = harness.client()
    for _ in range(300):
        client.machines.get("rg-arc-servers", "ready-1")
    assert not [r for r in harness.records if r.status == 429]


def test_machines_can_be_onboarded_at_runtime(make_twin):
    harness = make_twin(SCENARIO)
    resource_id = harness.twin.add_machine(machine_spec({"name": "new-one", "resource_group": "rg-new"}))
    client = harness.client()
    assert client.machines.get("rg-new", "new-one").id == resource_id
    assert "new-one" in {m.name for m in client.machines.list_by_subscription()}
    with pytest.raises(ValueError, match="already exists"):
        harness.twin.add_machine(machine_spec({"name": "new-one", "resource_group": "rg-new"}))


def test_rate_limit_headers_on_every_authenticated_response(make_twin):
    harness = make_twin(SCENARIO)
    base = f"{harness.url}/subscriptions/{harness.twin.subscription_ids[0]}"
    for url, header in [
        (f"{base}/providers/Microsoft.HybridCompute/machines?{API}", "x-ms-ratelimit-remaining-subscription-reads"),
        (f"{base}/providers/Microsoft.HybridCompute/machines", "x-ms-ratelimit-remaining-subscription-reads"),
        (f"{base}/providers/Microsoft.Compute/disks?{API}", "x-ms-ratelimit-remaining-subscription-reads"),
        (f"{harness.url}/subscriptions?api-version=2022-12-01", "x-ms-ratelimit-remaining-tenant-reads"),
    ]:
        assert header in requests.get(url, headers=AUTH, timeout=10).headers, url
    deleted = requests.delete(
        f"{base}/resourceGroups/rg-arc-servers/providers/Microsoft.HybridCompute/machines/ready-1/runCommands/x?{API}",
        headers=AUTH,
        timeout=10,
    )
    assert deleted.status_code == 204 and "x-ms-ratelimit-remaining-subscription-deletes" in deleted.headers


def test_requests_are_counted_by_operation(make_twin):
    harness = make_twin(SCENARIO)
    driver = MachineDriver(harness, "ready-3")
    driver.get()
    driver.readiness()
    driver.enable_hotpatch()
    requests.get(f"{harness.url}/subscriptions?api-version=2022-12-01", timeout=10)  # 401, still counted
    metrics = harness.twin.metrics()
    expected: dict[str, int] = {}
    for record in harness.records:
        expected[record.operation] = expected.get(record.operation, 0) + 1
    assert metrics["arm_requests_by_operation"] == expected
    assert metrics["arm_requests"] == len(harness.records)
    assert metrics["arm_requests_by_operation"]["runCommands.put"] == 1
    assert metrics["arm_requests_by_operation"]["licenseProfiles.put"] == 1
    assert metrics["throttled_responses"] == 0
    # ... and by subscription and throttling category (the tenant-level listing is in none)
    subscription = harness.twin.subscription_ids[0].lower()
    by_category = Counter("reads" if r.method == "GET" else "writes" for r in harness.records
                          if r.path.lower().startswith(f"/subscriptions/{subscription}/"))
    assert metrics["arm_requests_by_subscription"] == {subscription: dict(sorted(by_category.items()))}
