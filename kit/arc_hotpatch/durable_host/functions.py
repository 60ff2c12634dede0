"""Discovery of the functions a ``FunctionApp`` registers, and how the worker would call them."""

from __future__ import annotations

import importlib
import inspect
import os
import re
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import azure.functions as func

ORCHESTRATION_TRIGGER = "orchestrationTrigger"
ACTIVITY_TRIGGER = "activityTrigger"
ENTITY_TRIGGER = "entityTrigger"
HTTP_TRIGGER = "httpTrigger"
TIMER_TRIGGER = "timerTrigger"
EVENT_GRID_TRIGGER = "eventGridTrigger"
DURABLE_CLIENT = "durableClient"

# Bindings the host knows how to satisfy besides the trigger itself.
_SUPPORTED_EXTRA_BINDINGS = {DURABLE_CLIENT, "http"}


class FunctionAppError(ValueError):
    """The app cannot be loaded or declares something the host cannot run."""


def load_app(spec: str = "function_app:app") -> func.FunctionApp:
    """Import ``module:attribute`` (attribute defaults to ``app``) and return the FunctionApp."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise FunctionAppError(f"invalid app spec {spec!r}: expected 'module:attribute', e.g. 'function_app:app'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise FunctionAppError(f"cannot import module {module_name!r} for app spec {spec!r}: {exc}") from exc
    target: Any = module
    for part in (attribute or "app").split("."):
        if not hasattr(target, part):
            raise FunctionAppError(f"module {module_name!r} has no attribute {attribute or 'app'!r}")
        target = getattr(target, part)
    if not callable(getattr(target, "get_functions", None)):
        raise FunctionAppError(f"{spec!r} is not an azure.functions FunctionApp (no get_functions())")
    return target


def resolve_setting(value: str | None) -> str | None:
    """Resolve ``%NAME%`` app-setting expressions from the environment, as the Functions host does."""
    if value is None:
        return None

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise FunctionAppError(f"app setting {name!r} referenced as %{name}% is not set in the environment")
        return os.environ[name]

    return re.sub(r"%([^%]+)%", substitute, value)


@dataclass(frozen=True)
class DurableClientParam:
    param_name: str
    task_hub: str | None
    connection_name: str | None


@dataclass
class FunctionInfo:
    """One registered function, with what the worker needs to invoke it."""

    name: str
    trigger_type: str
    trigger_param: str
    trigger: dict[str, Any]
    bindings: list[dict[str, Any]]
    user_function: Callable[..., Any]
    durable_clients: list[DurableClientParam] = field(default_factory=list)
    accepts_context: bool = False
    unsupported_bindings: list[str] = field(default_factory=list)

    @property
    def durable_name(self) -> str:
        """Name used by orchestrations: the trigger's orchestration/activity property, else the function name."""
        return self.trigger.get("orchestration") or self.trigger.get("activity") or self.name


@dataclass
class HttpRoute:
    function: FunctionInfo
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str] | None  # None: every method
    auth_level: str  # "anonymous" | "function" | "admin"
    literal_weight: int

    def match(self, path: str) -> dict[str, str] | None:
        found = self.pattern.match(path)
        if found is None:
            return None
        return {name: value for name, value in found.groupdict().items() if value is not None}


class InvocationContext(func.Context):
    """Minimal ``func.Context`` for functions that declare a ``context`` parameter."""

    def __init__(self, function_name: str, function_directory: str = "") -> None:
        self._invocation_id = str(uuid.uuid4())
        self._function_name = function_name
        self._function_directory = function_directory
        self._storage = threading.local()

    @property
    def invocation_id(self) -> str:
        return self._invocation_id

    @property
    def thread_local_storage(self) -> Any:
        return self._storage

    @property
    def function_name(self) -> str:
        return self._function_name

    @property
    def function_directory(self) -> str:
        return self._function_directory

    @property
    def trace_context(self) -> Any:
        return None

    @property
    def retry_context(self) -> Any:
        return None


def list_functions(app: Any) -> list[Any]:
    """``app.get_functions()``, repeatable: the app stays usable by the next caller (another host, a test)."""
    # FunctionRegister.get_functions() records the names it saw and refuses them on a
    # second call; restore that bookkeeping so the app stays usable by others.
    saved = getattr(app, "functions_bindings", None)
    try:
        app.functions_bindings = None
        return list(app.get_functions())
    finally:
        app.functions_bindings = saved


def _binding_dict(binding: Any) -> dict[str, Any]:
    raw = binding.get_dict_repr()
    return {key: (value.value if hasattr(value, "value") else value) for key, value in raw.items()}


class FunctionRegistry:
    """Every function of an app, indexed the way the Functions host and the Durable extension look them up."""

    def __init__(self, app: Any, route_prefix: str = "api") -> None:
        self.app = app
        self.route_prefix = route_prefix.strip("/")
        self.functions: dict[str, FunctionInfo] = {}
        self.orchestrators: dict[str, FunctionInfo] = {}
        self.activities: dict[str, FunctionInfo] = {}
        self.routes: list[HttpRoute] = []
        for function in list_functions(app):
            info = self._describe(function)
            key = info.name.lower()
            self.functions[key] = info
            if info.trigger_type == ORCHESTRATION_TRIGGER:
                self.orchestrators[info.durable_name.lower()] = info
            elif info.trigger_type == ACTIVITY_TRIGGER:
                self.activities[info.durable_name.lower()] = info
            elif info.trigger_type == HTTP_TRIGGER:
                self.routes.append(_compile_route(info))
        # More literal text first, so "rollouts/latest" wins over "rollouts/{id}".
        self.routes.sort(key=lambda route: -route.literal_weight)

    @staticmethod
    def _describe(function: Any) -> FunctionInfo:
        name = function.get_function_name()
        trigger = function.get_trigger()
        trigger_dict = _binding_dict(trigger)
        bindings = [_binding_dict(b) for b in function.get_bindings()]
        user_function = function.get_user_function()
        info = FunctionInfo(
            name=name,
            trigger_type=trigger_dict["type"],
            trigger_param=trigger_dict["name"],
            trigger=trigger_dict,
            bindings=bindings,
            user_function=user_function,
        )
        for binding in bindings:
            if binding is trigger_dict or binding.get("name") == info.trigger_param:
                continue
            if binding["type"] == DURABLE_CLIENT:
                info.durable_clients.append(
                    DurableClientParam(binding["name"], binding.get("taskHub"), binding.get("connectionName"))
                )
            elif binding["type"] not in _SUPPORTED_EXTRA_BINDINGS:
                info.unsupported_bindings.append(f"{binding['type']} ({binding.get('name')})")
        try:
            parameters = inspect.signature(user_function).parameters
        except (TypeError, ValueError):
            parameters = {}
        info.accepts_context = "context" in parameters and info.trigger_param != "context"
        return info

    def orchestrator_names(self) -> frozenset[str]:
        return frozenset(info.durable_name for info in self.orchestrators.values())

    def activity_names(self) -> frozenset[str]:
        return frozenset(info.durable_name for info in self.activities.values())

    def orchestrator(self, name: str) -> FunctionInfo | None:
        return self.orchestrators.get(name.lower())

    def activity(self, name: str) -> FunctionInfo | None:
        return self.activities.get(name.lower())

    def function(self, name: str) -> FunctionInfo | None:
        return self.functions.get(name.lower())

    def of_type(self, trigger_type: str) -> list[FunctionInfo]:
        return [info for info in self.functions.values() if info.trigger_type == trigger_type]

    def match_route(self, path: str) -> list[tuple[HttpRoute, dict[str, str]]]:
        """Routes whose template matches ``path`` (relative to the prefix), best first."""
        matches = []
        for route in self.routes:
            params = route.match(path)
            if params is not None:
                matches.append((route, params))
        return matches


# ASP.NET route constraints the Functions host supports most often.
_CONSTRAINT_PATTERNS = {
    "int": r"-?\d+",
    "long": r"-?\d+",
    "bool": r"(?:true|false|True|False|TRUE|FALSE)",
    "alpha": r"[A-Za-z]+",
    "guid": r"[0-9A-Fa-f]{8}-?(?:[0-9A-Fa-f]{4}-?){3}[0-9A-Fa-f]{12}",
    "double": r"-?\d+(?:\.\d+)?",
    "decimal": r"-?\d+(?:\.\d+)?",
    "float": r"-?\d+(?:\.\d+)?",
}
_PARAMETER = re.compile(r"\{([^{}]+)\}")


def _parameter_regex(spec: str) -> tuple[str, bool, bool]:
    """(regex group for one {parameter}, optional?, catch-all?)."""
    catch_all = spec.startswith("*")
    spec = spec.lstrip("*")
    optional = spec.endswith("?")
    spec = spec.rstrip("?")
    name, _, constraints = spec.partition(":")
    name = name.split("=", 1)[0]
    if "=" in spec.split(":", 1)[0]:
        optional = True  # a default value makes the parameter optional
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        raise FunctionAppError(f"unsupported route parameter {{{spec}}}")
    body = ".*" if catch_all else "[^/]+"
    first_constraint = constraints.split(":", 1)[0].split("(", 1)[0].lower() if constraints else ""
    if not catch_all and first_constraint in _CONSTRAINT_PATTERNS:
        body = _CONSTRAINT_PATTERNS[first_constraint]
    return f"(?P<{name}>{body})", optional, catch_all


def _compile_route(info: FunctionInfo) -> HttpRoute:
    template = str(info.trigger.get("route") or info.name).strip("/")
    pattern = ""
    literal_weight = 0
    for segment in template.split("/") if template else []:
        whole = _PARAMETER.fullmatch(segment)
        if whole:
            group, optional, catch_all = _parameter_regex(whole.group(1))
            pattern += f"(?:/{group})?" if (optional or catch_all) else f"/{group}"
            continue
        piece = "/"
        position = 0
        for parameter in _PARAMETER.finditer(segment):
            literal = segment[position : parameter.start()]
            piece += re.escape(literal)
            literal_weight += len(literal)
            group, _, _ = _parameter_regex(parameter.group(1))
            piece += group.replace("[^/]+", "[^/]+?")
            position = parameter.end()
        literal = segment[position:]
        piece += re.escape(literal)
        literal_weight += len(literal)
        pattern += piece
    methods_raw = info.trigger.get("methods")
    methods = None
    if methods_raw:
        methods = frozenset(str(m.value if hasattr(m, "value") else m).upper() for m in methods_raw)
    auth = str(info.trigger.get("authLevel") or "function").lower()
    return HttpRoute(
        function=info,
        template=template,
        pattern=re.compile(f"^{pattern}/?$", re.IGNORECASE),
        methods=methods,
        auth_level=auth,
        literal_weight=literal_weight,
    )


def build_kwargs(
    info: FunctionInfo, trigger_value: Any, client_bindings: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Keyword arguments the Python worker passes: trigger, durable client binding JSON, context."""
    if info.unsupported_bindings:
        raise FunctionAppError(
            f"function '{info.name}' declares bindings the local durable host cannot provide: "
            + ", ".join(info.unsupported_bindings)
        )
    kwargs: dict[str, Any] = {info.trigger_param: trigger_value}
    for client in info.durable_clients:
        if client_bindings is None or client.param_name not in client_bindings:
            raise FunctionAppError(f"no durable client binding prepared for '{info.name}.{client.param_name}'")
        kwargs[client.param_name] = client_bindings[client.param_name]
    if info.accepts_context:
        kwargs["context"] = InvocationContext(info.name)
    return kwargs
