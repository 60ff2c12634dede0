"""Every app setting the code reads is set by the Bicep, with the safe Policy defaults."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from tree_sitter import Node

from core.policy import CLOUD_ARM_ENDPOINTS, SETTINGS, Policy, SettingSpec, load_policy
from core.vocabulary import RebootPolicy, WorkaroundMode

from .bicep_tree import (
    INFRA,
    Scope,
    evaluate,
    identifiers,
    literal,
    load,
    lookup,
    object_keys,
    object_properties,
    text,
)

MAIN = load(INFRA / "main.bicep")
FUNCTION_APP = load(INFRA / "app" / "function-app.bicep")
PARAMETERS_JSON = json.loads((INFRA / "main.parameters.json").read_text(encoding="utf-8"))["parameters"]
SAMPLE_TARGET = "00000000-0000-0000-0000-0000000000aa"

# Settings the platform part of the app reads (besides the HOTPATCH_* policy).
IDENTITY_STORAGE = {
    "AzureWebJobsStorage__credential",
    "AzureWebJobsStorage__clientId",
    "AzureWebJobsStorage__blobServiceUri",
    "AzureWebJobsStorage__queueServiceUri",
    "AzureWebJobsStorage__tableServiceUri",
}
PLATFORM = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING", "AZURE_CLIENT_ID"}


def param_name(spec: SettingSpec) -> str:
    """main.bicep's parameter of a setting: hotpatch + the field in PascalCase."""
    return "hotpatch" + "".join(part.capitalize() for part in spec.field.split("_"))


def _app_settings_node() -> Node:
    (config,) = FUNCTION_APP.resources_of("Microsoft.Web/sites/config")
    assert literal(lookup(config.body, "name")) == "appsettings"
    return lookup(config.body, "properties")


def _resolve_function_app_param(name: str) -> tuple[Node, Scope]:
    """A function-app.bicep parameter -> the expression main.bicep passes for it."""
    (call,) = [m for m in MAIN.modules if m.path == FUNCTION_APP.path]
    return object_properties(lookup(call.body, "params"))[name], Scope(MAIN)


def deployed_setting_names() -> set[str]:
    return object_keys(_app_settings_node(), Scope(FUNCTION_APP), _resolve_function_app_param)


def hotpatch_settings_node() -> Node:
    return MAIN.variables["hotpatchAppSettings"]


def default_hotpatch_settings() -> dict[str, str]:
    """The HOTPATCH_* settings a deployment with every default produces (one sample target subscription)."""
    scope = Scope(MAIN, overrides={"targets": [SAMPLE_TARGET], "hotpatchCloud": "AzureCloud"})
    return evaluate(hotpatch_settings_node(), scope)


def test_every_setting_the_code_reads_is_deployed() -> None:
    names = deployed_setting_names()
    expected = {spec.env for spec in SETTINGS} | {"HOTPATCH_TASK_HUB"} | IDENTITY_STORAGE | PLATFORM
    assert expected <= names, f"not set by the Bicep: {sorted(expected - names)}"
    assert "DURABLE_TASK_SCHEDULER_CONNECTION_STRING" in names


def test_no_setting_that_breaks_flex_consumption_or_leaks_a_key() -> None:
    names = deployed_setting_names()
    forbidden = {
        "AzureWebJobsStorage",  # a connection string: shared keys are disabled
        "FUNCTIONS_WORKER_RUNTIME",  # Flex Consumption: functionAppConfig.runtime instead
        "FUNCTIONS_EXTENSION_VERSION",
        "WEBSITE_RUN_FROM_PACKAGE",
        "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
        "HOTPATCH_ARM_TOKEN",  # development only (static bearer token for the fleet twin)
    }
    assert not names & forbidden
    source = "\n".join(path.read_text(encoding="utf-8") for path in INFRA.rglob("*.bicep"))
    assert "listKeys" not in source and "AccountKey=" not in source and "InstrumentationKey=" not in source


def test_storage_identity_and_telemetry_settings() -> None:
    platform = object_properties(FUNCTION_APP.variables["platformSettings"])
    assert literal(platform["AzureWebJobsStorage__credential"]) == "managedidentity"
    assert text(platform["AzureWebJobsStorage__clientId"]) == "identityClientId"
    assert text(platform["AZURE_CLIENT_ID"]) == "identityClientId"
    for service in ("blob", "queue", "table"):
        uri = text(platform[f"AzureWebJobsStorage__{service}ServiceUri"])
        assert uri == f"storage.properties.primaryEndpoints.{service}"
    assert (
        text(platform["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"])
        == "'ClientId=${identityClientId};Authorization=AAD'"
    )
    assert text(platform["APPLICATIONINSIGHTS_CONNECTION_STRING"]) == "applicationInsights.properties.ConnectionString"
    # the platform settings win over anything main.bicep passes
    assert text(_app_settings_node()) == "union(appSettings, platformSettings)"


def test_durable_task_scheduler_connection_uses_the_identity() -> None:
    node = MAIN.variables["durableBackendSettings"]
    assert identifiers(node.child_by_field_name("condition")) == {"durableTaskSchedulerEnabled"}
    value = object_properties(node.child_by_field_name("consequence"))["DURABLE_TASK_SCHEDULER_CONNECTION_STRING"]
    assert text(value) == (
        "'Endpoint=${scheduler.outputs.endpoint};Authentication=ManagedIdentity;ClientID=${identity.outputs.clientId}'"
    )
    assert literal(node.child_by_field_name("alternative")) == {}


@pytest.mark.parametrize("spec", [s for s in SETTINGS if s.field != "subscriptions"], ids=lambda s: s.env)
def test_each_setting_is_a_parameter_with_a_default(spec: SettingSpec) -> None:
    name = param_name(spec)
    assert name in MAIN.params, f"main.bicep has no parameter {name} for {spec.env}"
    assert MAIN.params[name].default is not None, f"{name} needs a default"
    value = object_properties(hotpatch_settings_node())[spec.env]
    assert identifiers(value) == {name}, f"{spec.env} must come from the parameter {name}"


def test_subscriptions_come_from_the_target_list() -> None:
    value = object_properties(hotpatch_settings_node())["HOTPATCH_SUBSCRIPTIONS"]
    assert identifiers(value) == {"discoverAllReadableSubscriptions", "targets"}
    assert default_hotpatch_settings()["HOTPATCH_SUBSCRIPTIONS"] == SAMPLE_TARGET
    targets = text(MAIN.variables["targets"])
    assert "listedTargets" in targets and "subscription().subscriptionId" in targets
    assert "targetSubscriptionIds" in text(MAIN.variables["listedTargets"])
    assert "targetSubscriptionIdsCsv" in text(MAIN.variables["csvTargets"])
    assert MAIN.params["targetSubscriptionIds"].type == "array"


def test_default_deployment_gives_the_policy_defaults() -> None:
    settings = default_hotpatch_settings()
    assert load_policy(settings) == replace(Policy(), subscriptions=(SAMPLE_TARGET,))


def test_safe_defaults() -> None:
    settings = default_hotpatch_settings()
    assert settings["HOTPATCH_DRY_RUN"] == "false"
    assert settings["HOTPATCH_REBOOT_POLICY"] == "approval" == RebootPolicy.APPROVAL.value
    assert settings["HOTPATCH_ESCALATION_WEBHOOK"] == ""
    assert "secure" in MAIN.params["hotpatchEscalationWebhook"].decorators


def test_allowed_values_match_the_code() -> None:
    assert MAIN.params["hotpatchRebootPolicy"].allowed() == [m.value for m in RebootPolicy]
    assert MAIN.params["hotpatchWorkaroundMode"].allowed() == [m.value for m in WorkaroundMode]
    assert MAIN.params["hotpatchCloud"].allowed() == list(CLOUD_ARM_ENDPOINTS)
    assert text(MAIN.params["hotpatchCloud"].default) == "environment().name"


def test_task_hub_name_fits_both_backends() -> None:
    hub = literal(MAIN.params["hotpatchTaskHub"].default)
    assert 3 <= len(hub) <= 45 and hub[0].isalpha() and hub.isalnum()  # Azure Storage rules (DTS: [a-zA-Z0-9-]{3,64})
    assert object_properties(hotpatch_settings_node())["HOTPATCH_TASK_HUB"].type == "identifier"
    call = next(m for m in MAIN.modules if m.path.name == "durable-task-scheduler.bicep")
    assert text(lookup(call.body, "params.taskHubName")) == "hotpatchTaskHub"


def test_parameters_file_maps_every_setting_to_its_own_name() -> None:
    for spec in [s for s in SETTINGS if s.field != "subscriptions"]:
        assert PARAMETERS_JSON[param_name(spec)]["value"] == "${" + spec.env + "}"
    assert PARAMETERS_JSON["hotpatchTaskHub"]["value"] == "${HOTPATCH_TASK_HUB}"
    assert PARAMETERS_JSON["environmentName"]["value"] == "${AZURE_ENV_NAME}"
    assert PARAMETERS_JSON["location"]["value"] == "${AZURE_LOCATION}"
    assert PARAMETERS_JSON["targetSubscriptionIdsCsv"]["value"] == "${TARGET_SUBSCRIPTION_IDS}"


def test_parameters_file_names_only_declared_parameters() -> None:
    assert set(PARAMETERS_JSON) <= set(MAIN.params)
    required = {name for name, param in MAIN.params.items() if param.default is None}
    assert required <= set(PARAMETERS_JSON)
    for name, entry in PARAMETERS_JSON.items():
        value = entry["value"]
        assert value.startswith("${") and value.endswith("}") and value.count("${") == 1, name
