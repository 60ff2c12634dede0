"""Handlers for subscriptions (the subscriptions API, 2022-12-01): list and get."""

from __future__ import annotations

from ..arm import subscription_resource
from ..calls import Call, Reply
from ..state import FleetState
from .common import subscription


def list_subscriptions(state: FleetState, call: Call) -> Reply:
    tenant = state.fleet.tenant_id
    value = [subscription_resource(s, tenant, i) for i, s in enumerate(state.fleet.subscription_ids)]
    return Reply(200, {"value": value})


def get_subscription(state: FleetState, call: Call) -> Reply:
    found = subscription(state, call)
    index = state.fleet.subscription_ids.index(found)
    return Reply(200, subscription_resource(found, state.fleet.tenant_id, index))
