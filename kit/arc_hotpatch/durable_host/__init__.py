"""Local durable host: runs an Azure Functions Durable (Python v2) app offline, as the Functions host would.

    from arc_hotpatch.clocks import VirtualClock
    from arc_hotpatch.durable_host import DurableHost, load_app

    with DurableHost(load_app("function_app:app"), VirtualClock()) as host:
        instance_id = host.start_new("my_orchestrator", input={"x": 1})
        status = host.run_until_complete([instance_id])[instance_id]

``serve`` mode: ``run_serve(app, ScaledClock(60), port=7071, no_auth=False)``.
"""

from .errors import (
    DeadlockError,
    DurableHostError,
    HostTimeoutError,
    InstanceAlreadyExists,
    InstanceGone,
    InstanceNotFound,
    OrchestratorNotFound,
)
from .functions import FunctionAppError, load_app
from .host import RUNTIME_STATUSES, TERMINAL_STATUSES, DurableHost, EpisodeRecord
from .http_server import HostKeys
from .serve import describe_endpoints, run_serve

__all__ = [
    "RUNTIME_STATUSES",
    "TERMINAL_STATUSES",
    "DeadlockError",
    "DurableHost",
    "DurableHostError",
    "EpisodeRecord",
    "FunctionAppError",
    "HostKeys",
    "HostTimeoutError",
    "InstanceAlreadyExists",
    "InstanceGone",
    "InstanceNotFound",
    "OrchestratorNotFound",
    "describe_endpoints",
    "load_app",
    "run_serve",
]
