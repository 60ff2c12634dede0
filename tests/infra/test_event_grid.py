"""Event Grid: a subscription system topic per target, filtered to Arc machine writes, to the app's function."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from arc_hotpatch.durable_host.functions import list_functions

from .bicep_tree import INFRA, callers, literal, load, lookup, named, object_properties, text

EVENT_SUBSCRIPTION = load(INFRA / "eventgrid" / "event-subscription.bicep")
SYSTEM_TOPIC = load(INFRA / "eventgrid" / "system-topic.bicep")
FUNCTION_NAME = "on_arc_machine_written"


def test_system_topic_is_the_subscription_topic() -> None:
    (topic,) = SYSTEM_TOPIC.resources_of("Microsoft.EventGrid/systemTopics")
    assert literal(lookup(topic.body, "properties.topicType")) == "Microsoft.Resources.Subscriptions"
    assert text(lookup(topic.body, "properties.source")) == "subscription().id"
    assert literal(lookup(topic.body, "location")) == "global"


def test_event_subscription_filter() -> None:
    (subscription,) = EVENT_SUBSCRIPTION.resources_of("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    event_filter = lookup(subscription.body, "properties.filter")
    assert literal(lookup(event_filter, "includedEventTypes")) == ["Microsoft.Resources.ResourceWriteSuccess"]
    assert literal(lookup(event_filter, "advancedFilters")) == [
        {
            "operatorType": "StringIn",
            "key": "data.operationName",
            "values": ["Microsoft.HybridCompute/machines/write"],
        }
    ]
    assert set(object_properties(event_filter)) == {"includedEventTypes", "advancedFilters"}
    assert literal(lookup(subscription.body, "properties.eventDeliverySchema")) == "EventGridSchema"


def test_event_subscription_delivers_to_the_function() -> None:
    (subscription,) = EVENT_SUBSCRIPTION.resources_of("Microsoft.EventGrid/systemTopics/eventSubscriptions")
    destination = lookup(subscription.body, "properties.destination")
    assert literal(lookup(destination, "endpointType")) == "AzureFunction"
    assert text(lookup(destination, "properties.resourceId")) == "'${functionAppResourceId}/functions/${functionName}'"
    assert literal(lookup(destination, "properties.maxEventsPerBatch")) == 1
    assert literal(EVENT_SUBSCRIPTION.params["functionName"].default) == FUNCTION_NAME


def test_every_path_to_the_event_subscription_names_the_function() -> None:
    main = load(INFRA / "main.bicep")
    assert literal(main.variables["eventGridFunctionName"]) == FUNCTION_NAME
    assert literal(load(INFRA / "event-subscriptions.bicep").params["functionName"].default) == FUNCTION_NAME
    calls = callers(EVENT_SUBSCRIPTION.path)
    assert {call.file.relative for call in calls} == {
        "infra/event-subscriptions.bicep",
        "infra/target/target-subscription.bicep",
    }
    for call in calls:
        params = object_properties(lookup(call.body, "params"))
        assert text(params["functionName"]) == "functionName"
        assert text(params["functionAppResourceId"]) == "functionAppResourceId"


def test_main_creates_the_topic_on_every_target_and_subscribes_only_on_request() -> None:
    main = load(INFRA / "main.bicep")
    (call,) = [m for m in main.modules if m.path.name == "target-subscription.bicep"]
    value = call.body.parent
    assert value is not None and value.type == "for_statement" and "targets" in text(value)
    params = object_properties(lookup(call.body, "params"))
    assert text(params["createEventSubscription"]) == "eventSubscriptionsEnabled"
    assert literal(main.params["eventSubscriptionsEnabled"].default) is False
    assert text(params["functionAppResourceId"]) == "api.outputs.id"
    target = load(call.path)
    (topic_call,) = [m for m in target.modules if m.path == SYSTEM_TOPIC.path]
    assert "useExistingTopic" in text(topic_call.body.parent)
    (subscribe_call,) = [m for m in target.modules if m.path == EVENT_SUBSCRIPTION.path]
    assert text(named(subscribe_call.body.parent)[0]) == "(createEventSubscription)"
    assert "EVENT_GRID_SYSTEM_TOPICS" in main.outputs


def test_the_app_registers_the_event_grid_function() -> None:
    import function_app

    functions = {fn.get_function_name(): fn for fn in list_functions(function_app.app)}
    assert FUNCTION_NAME in functions
    trigger = functions[FUNCTION_NAME].get_trigger()
    assert trigger is not None and trigger.get_binding_name() == "eventGridTrigger"


def test_postdeploy_hook_uses_the_same_function_name() -> None:
    path = INFRA / "hooks" / "wire_event_grid.py"
    spec = importlib.util.spec_from_file_location("wire_event_grid", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.DEFAULT_FUNCTION == FUNCTION_NAME
    assert Path(module.TEMPLATE) == INFRA / "event-subscriptions.bicep"
