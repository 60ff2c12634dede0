"""The twin's own namespace, ``/_twin/...``: the simulated machines' truth, outside ARM.

- ``GET /_twin/machines/{name}``: one machine's truth (``inspection.machine_truth``: at least
  ``id``, ``name``, ``boot_count``, ``boots``). Names are matched case-insensitively; a name
  used in several subscriptions or resource groups is narrowed with ``?subscription=<id>``
  and ``?resource_group=<name>`` (a 409 lists the candidates while it stays ambiguous).
- ``GET /_twin/machines``: every machine's truth (``{"value": [...]}``, in key order), with
  the same optional filters.

No ARM authentication, throttling, api-version or injected faults apply here, and these
requests are not counted in the ARM metrics: the twin listens on loopback only, and this
is the test's and operator's view (a plain ``curl <twin>/_twin/machines/web-1`` works; an
``Authorization`` header is ignored). Errors are JSON: 404 for an unknown machine or path,
405 for a method other than GET.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from ..calls import Reply
from ..inspection import machine_truth
from ..machine import SimulatedMachine
from ..state import FleetState

PREFIX = "/_twin"


def is_twin_path(path: str) -> bool:
    """Whether ``path`` is in the twin's own namespace (not ARM's)."""
    lowered = path.lower()
    return lowered == PREFIX or lowered.startswith(PREFIX + "/")


def _error(status: int, code: str, message: str, **extra: object) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message, **extra}})


def _matching(state: FleetState, query: Mapping[str, str], name: str | None) -> list[SimulatedMachine]:
    subscription = (query.get("subscription") or "").lower()
    group = (query.get("resource_group") or query.get("resourcegroup") or "").lower()
    wanted = name.lower() if name is not None else None
    found = [
        m for m in state.machines.values()
        if (wanted is None or m.name.lower() == wanted)
        and (not subscription or m.subscription_id.lower() == subscription)
        and (not group or m.resource_group.lower() == group)
    ]
    return sorted(found, key=lambda m: m.key)


def answer(state: FleetState, now: datetime, method: str, path: str, query: Mapping[str, str]) -> Reply:
    """The reply to a request under ``/_twin`` (``query``'s keys lower-cased)."""
    segments = [s for s in path.split("/") if s][1:]
    if not segments or segments[0].lower() != "machines" or len(segments) > 2:
        return _error(404, "NotFound", f"The fleet twin serves no resource at '{path}' "
                                       "(its own namespace serves /_twin/machines and /_twin/machines/{name}).")
    if method not in ("GET", "HEAD"):
        return _error(405, "MethodNotAllowed", f"/_twin/machines is read-only; got {method}.")
    name = segments[1] if len(segments) == 2 else None
    machines = _matching(state, query, name)
    for machine in machines:
        machine.advance(now)
    if name is None:
        return Reply(200, {"value": [machine_truth(m, now) for m in machines]})
    if not machines:
        return _error(404, "MachineNotFound", f"The fleet twin has no machine named '{name}'"
                      + (" matching the given subscription / resource_group." if query else "."))
    if len(machines) > 1:
        return _error(
            409, "AmbiguousMachineName",
            f"{len(machines)} machines are named '{name}'; narrow with ?subscription=<id> and/or ?resource_group=.",
            candidates=[m.resource_id for m in machines],
        )
    return Reply(200, machine_truth(machines[0], now))
