"""What the handlers share: finding a request's subscription, resource group and machine, ``$expand``, paging.

Each lookup raises the ``ArmError`` ARM answers with when the thing is missing or malformed.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from typing import Any, TypeVar

from ..arm import ArmError
from ..calls import Call, Reply
from ..machine import SimulatedMachine
from ..state import FleetState

GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")

T = TypeVar("T")


def subscription(state: FleetState, call: Call) -> str:
    """The call's subscription id, as the fleet spells it."""
    raw = call.params["subscription"]
    if not GUID.match(raw):
        raise ArmError(
            400, "InvalidSubscriptionId", f"The provided subscription identifier '{raw}' is malformed or invalid."
        )
    found = state.subscriptions.get(raw.lower())
    if found is None:
        raise ArmError(404, "SubscriptionNotFound", f"The subscription '{raw}' could not be found.")
    return found


def resource_group_machines(state: FleetState, call: Call) -> list[SimulatedMachine]:
    """The machines of the call's resource group, in key order."""
    group = call.params["resource_group"]
    machines = state.by_resource_group.get((subscription(state, call).lower(), group.lower()))
    if machines is None:
        raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{group}' could not be found.")
    return machines


def machine(state: FleetState, call: Call, *, parent_of: str | None = None) -> SimulatedMachine:
    """The call's machine, advanced to now; ``parent_of`` (a child type) makes a miss ARM's nested-resource 404."""
    resource_group_machines(state, call)
    found = state.machines.get(call.params["machine_key"])
    if found is None:
        name, group = call.params["machine"], call.params["resource_group"]
        if parent_of is not None:
            raise ArmError(
                404,
                "ParentResourceNotFound",
                f"Can not perform requested operation on nested resource. Parent resource '{name}' not found.",
            )
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource 'Microsoft.HybridCompute/machines/{name}' under resource group '{group}' was not "
            "found. For more details please go to https://aka.ms/ARMResourceNotFoundFix",
        )
    found.advance(call.now)
    return found


def child_not_found(call: Call, child_type: str, name: str) -> ArmError:
    """ARM's 404 for a machine's missing ``child_type/name``."""
    return ArmError(
        404,
        "ResourceNotFound",
        f"The Resource 'Microsoft.HybridCompute/machines/{call.params['machine']}/{child_type}/{name}' under "
        f"resource group '{call.params['resource_group']}' was not found. For more details please go to "
        "https://aka.ms/ARMResourceNotFoundFix",
    )


def expand_instance_view(call: Call) -> bool:
    """Whether the call asks for ``$expand=instanceView`` (the only expansion served)."""
    expand = call.query.get("$expand")
    if expand is None:
        return False
    if expand.lower() != "instanceview":
        raise ArmError(
            400,
            "InvalidParameter",
            f"The value '{expand}' of the $expand parameter is invalid; supported: instanceView.",
        )
    return True


def page(state: FleetState, call: Call, items: list[T], render: Callable[[T], dict[str, Any]]) -> Reply:
    """One page of ``items`` from the call's ``$skiptoken`` on, with a ``nextLink`` when more remain."""
    token = call.query.get("$skiptoken")
    offset = 0
    if token:
        try:
            offset = int(base64.urlsafe_b64decode(token.encode()).decode())
        except (ValueError, binascii.Error):
            raise ArmError(400, "InvalidSkipToken", f"The skip token '{token}' is invalid.") from None
    size = state.page_size
    body: dict[str, Any] = {"value": [render(item) for item in items[offset : offset + size]]}
    if offset + size < len(items):
        next_token = base64.urlsafe_b64encode(str(offset + size).encode()).decode()
        expand = call.query.get("$expand")
        extra = "" if expand is None else f"&$expand={expand}"
        body["nextLink"] = (
            f"{call.origin}{call.path}?api-version={call.query['api-version']}{extra}&$skiptoken={next_token}"
        )
    return Reply(200, body)
