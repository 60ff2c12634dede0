"""The twin's route table: (method, path template) -> the ARM operation and the handler that answers it.

Templates match path segments (empty segments ignored); literal segments match
case-insensitively, as ARM's do, and ``{name}`` puts the segment into the call's params
(``{machine}`` routes also get ``machine_key``, the machine's index key). The table is
compiled once into a tree, so resolving a path costs one dict step per segment. A path
the table does not serve resolves to a ``Route`` carrying ARM's error for it: an unknown
namespace or resource type, no such resource, or a method the resource does not support.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from core.azure_clients import HYBRID_COMPUTE_API_VERSION

from .arm import ArmError
from .calls import Call, Reply
from .handlers import license_profiles, machines, operations, run_commands, subscriptions
from .machine import machine_resource_id
from .state import FleetState

Handler = Callable[[FleetState, Call], Reply]

# Which api-version rules a route follows (middleware.check_api_version).
SUBSCRIPTIONS_API = "subscriptions"
HYBRID_COMPUTE_API = "hybridcompute"
NO_API = "none"  # unrouted: refused before the version matters

_CATEGORY_BY_METHOD = {"GET": "reads", "HEAD": "reads", "DELETE": "deletes"}


def request_category(method: str) -> str:
    """ARM's throttling category of a request: reads, writes or deletes."""
    return _CATEGORY_BY_METHOD.get(method, "writes")


@dataclass(frozen=True)
class Route:
    """What the twin does with a request: count it as ``operation``, check its api-version as ``api``,
    take a token from ``category``, and answer with ``handler`` or refuse with ``error``."""

    operation: str  # request counting name, e.g. "machines.get"
    api: str  # SUBSCRIPTIONS_API | HYBRID_COMPUTE_API | NO_API
    category: str  # throttling bucket: reads | writes | deletes
    handler: Handler | None = None
    error: ArmError | None = None


_PROVIDER = "subscriptions/{subscription}/providers/Microsoft.HybridCompute"
_LOCATION = f"{_PROVIDER}/locations/{{location}}"
_MACHINES = "subscriptions/{subscription}/resourceGroups/{resource_group}/providers/Microsoft.HybridCompute/machines"
_MACHINE = f"{_MACHINES}/{{machine}}"
_LICENSE_PROFILES = f"{_MACHINE}/licenseProfiles"
_RUN_COMMANDS = f"{_MACHINE}/runCommands"
_SUB, _HC = SUBSCRIPTIONS_API, HYBRID_COMPUTE_API

ROUTE_TABLE: tuple[tuple[str, str, str, str, Handler], ...] = (
    # method, path template, operation (request counting), api, handler
    ("GET", "subscriptions", "subscriptions.list", _SUB, subscriptions.list_subscriptions),
    ("GET", "subscriptions/{subscription}", "subscriptions.get", _SUB, subscriptions.get_subscription),
    ("GET", f"{_PROVIDER}/machines", "machines.list_by_subscription", _HC, machines.list_machines),
    ("GET", f"{_LOCATION}/operationStatus/{{operation_id}}", "operationStatus.get", _HC, operations.operation_status),
    ("GET", f"{_LOCATION}/operationResults/{{operation_id}}", "operationResults.get", _HC, operations.operation_result),
    ("GET", _MACHINES, "machines.list_by_resource_group", _HC, machines.list_machines),
    ("GET", _MACHINE, "machines.get", _HC, machines.get_machine),
    ("POST", f"{_MACHINE}/assessPatches", "machines.assessPatches", _HC, machines.assess_patches),
    ("POST", f"{_MACHINE}/installPatches", "machines.installPatches", _HC, machines.install_patches),
    ("GET", _LICENSE_PROFILES, "licenseProfiles.list", _HC, license_profiles.list_license_profiles),
    ("GET", f"{_LICENSE_PROFILES}/{{name}}", "licenseProfiles.get", _HC, license_profiles.get_license_profile),
    ("PUT", f"{_LICENSE_PROFILES}/{{name}}", "licenseProfiles.put", _HC, license_profiles.put_license_profile),
    ("PATCH", f"{_LICENSE_PROFILES}/{{name}}", "licenseProfiles.patch", _HC, license_profiles.patch_license_profile),
    ("DELETE", f"{_LICENSE_PROFILES}/{{name}}", "licenseProfiles.delete", _HC, license_profiles.delete_license_profile),
    ("GET", _RUN_COMMANDS, "runCommands.list", _HC, run_commands.list_run_commands),
    ("GET", f"{_RUN_COMMANDS}/{{name}}", "runCommands.get", _HC, run_commands.get_run_command),
    ("PUT", f"{_RUN_COMMANDS}/{{name}}", "runCommands.put", _HC, run_commands.put_run_command),
    ("PATCH", f"{_RUN_COMMANDS}/{{name}}", "runCommands.patch", _HC, run_commands.patch_run_command),
    ("DELETE", f"{_RUN_COMMANDS}/{{name}}", "runCommands.delete", _HC, run_commands.delete_run_command),
)


class _Node:
    """One path position in the compiled table: literal children (lower-cased) or one parameter child."""

    __slots__ = ("api", "keyed", "literals", "param", "param_name", "routes", "type_name")

    def __init__(self) -> None:
        self.literals: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.param_name = ""
        self.routes: dict[str, Route] | None = None  # by method, where a template ends here
        self.type_name = ""  # the operations' resource type, e.g. "runCommands" (names a 405's operation)
        self.api = ""
        self.keyed = False  # the template names a {machine}


def _compile(table: tuple[tuple[str, str, str, str, Handler], ...]) -> _Node:
    root = _Node()
    for method, template, operation, api, handler in table:
        node = root
        for segment in template.split("/"):
            # A node has literal children or one parameter, never both: resolving never backtracks.
            if segment.startswith("{"):
                name = segment[1:-1]
                if node.literals or (node.param is not None and node.param_name != name):
                    raise ValueError(f"route {template!r}: {{{name}}} is ambiguous at this position")
                if node.param is None:
                    node.param, node.param_name = _Node(), name
                node = node.param
            else:
                if node.param is not None:
                    raise ValueError(f"route {template!r}: {segment!r} is ambiguous at this position")
                node = node.literals.setdefault(segment.lower(), _Node())
        type_name = operation.rsplit(".", 1)[0]
        if node.routes is None:
            node.routes, node.type_name, node.api = {}, type_name, api
            node.keyed = "{machine}" in template
        elif method in node.routes or (node.type_name, node.api) != (type_name, api):
            raise ValueError(f"route {method} {template!r} conflicts with the table")
        node.routes[method] = Route(operation, api, request_category(method), handler)
    return root


_ROOT = _compile(ROUTE_TABLE)


def resolve(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for ``method`` (upper case) on ``path``, and the path's params."""
    segments = [s for s in path.split("/") if s]
    node = _ROOT
    params: dict[str, str] = {}
    for segment in segments:
        if node.param is not None:
            params[node.param_name] = segment
            node = node.param
        else:
            child = node.literals.get(segment.lower())
            if child is None:
                return _unrouted(method, segments)
            node = child
    routes = node.routes
    if routes is None:
        return _unrouted(method, segments)
    if node.keyed:
        machine_id = machine_resource_id(params["subscription"], params["resource_group"], params["machine"])
        params["machine_key"] = machine_id.lower()
    route = routes.get(method)
    if route is None:
        error = ArmError(405, "MethodNotAllowed", f"The requested resource does not support http method '{method}'.")
        route = Route(f"{node.type_name}.{method.lower()}", node.api, request_category(method), None, error)
    return route, params


def _refused(method: str, api: str, error: ArmError) -> Route:
    return Route("unknown", api, request_category(method), None, error)


def _unrouted(method: str, segments: list[str]) -> tuple[Route, dict[str, str]]:
    """ARM's 404 for a path the table does not serve, scoped to the subscription when it names one."""
    lower = [s.lower() for s in segments]
    nowhere = f"The fleet twin serves no resource at '/{'/'.join(segments)}'."
    # The table serves "subscriptions" and "subscriptions/{subscription}", so a miss under them is deeper.
    if len(lower) < 2 or lower[0] != "subscriptions":
        return _refused(method, NO_API, ArmError(404, "NotFound", nowhere)), {}
    params = {"subscription": segments[1]}
    if len(lower) >= 4 and lower[2] == "providers":
        namespace_at = 3
    elif len(lower) >= 6 and lower[2] == "resourcegroups" and lower[4] == "providers":
        namespace_at = 5
    else:
        return _refused(method, NO_API, ArmError(404, "NotFound", nowhere)), params
    if lower[namespace_at] != "microsoft.hybridcompute":
        error = ArmError(
            404,
            "InvalidResourceNamespace",
            f"The resource namespace '{segments[namespace_at]}' is invalid "
            "(the fleet twin serves Microsoft.HybridCompute only).",
        )
        return _refused(method, NO_API, error), params
    type_name = "/".join(segments[namespace_at + 1 :: 2]) or "(none)"
    error = ArmError(
        404,
        "InvalidResourceType",
        f"The resource type '{type_name}' could not be found in the namespace 'Microsoft.HybridCompute' "
        f"for api version '{HYBRID_COMPUTE_API_VERSION}'.",
    )
    return _refused(method, HYBRID_COMPUTE_API, error), params
