"""azure.yaml and its hooks: the azd service, the host.json check and the Event Grid wiring."""

from __future__ import annotations

import importlib.util
import json
import re
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from .bicep_tree import INFRA, ROOT

AZURE_YAML = ROOT / "azure.yaml"
TOPICS = [
    {"subscriptionId": "00000000-0000-0000-0000-000000000001", "resourceGroup": "rg-dev-hotpatch-events", "name": "t1"},
    {"subscriptionId": "00000000-0000-0000-0000-000000000002", "resourceGroup": "rg-shared", "name": "existing"},
]
APP_ID = (
    "/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-dev/providers/Microsoft.Web/sites/func-x"
)
ENV = {
    "AZURE_ENV_NAME": "dev",
    "AZURE_LOCATION": "swedencentral",
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000001",
    "AZURE_FUNCTION_APP_ID": APP_ID,
    "EVENT_GRID_SYSTEM_TOPICS": json.dumps(TOPICS),
    "EVENT_GRID_FUNCTION_NAME": "on_arc_machine_written",
}


def _hook(name: str) -> ModuleType:
    path = INFRA / "hooks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"infra_hook_{name}", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


wire = _hook("wire_event_grid")
check = _hook("check_host_json")


# ---------------------------------------------------------------- azure.yaml


def test_azure_yaml_declares_the_python_function_service() -> None:
    text = AZURE_YAML.read_text(encoding="utf-8")
    service = text.split("services:", 1)[1].split("\nhooks:", 1)[0]
    assert re.search(r"^  api:\n    project: \.\n    language: python\n    host: function$", service, re.MULTILINE)


def test_azure_yaml_hooks_run_existing_scripts() -> None:
    text = AZURE_YAML.read_text(encoding="utf-8")
    scripts = re.findall(r"run: python3? (\S+)", text)
    assert sorted(set(scripts)) == ["infra/hooks/check_host_json.py", "infra/hooks/wire_event_grid.py"]
    assert len(scripts) == 4  # posix and windows for both hooks
    for script in scripts:
        assert (ROOT / script).is_file()
    assert "predeploy:" in text and "postdeploy:" in text


# ---------------------------------------------------------------- host.json check


def _host(provider: dict[str, Any] | None, hub: str = "%HOTPATCH_TASK_HUB%") -> dict[str, Any]:
    durable: dict[str, Any] = {"hubName": hub}
    if provider is not None:
        durable["storageProvider"] = provider
    return {"version": "2.0", "extensions": {"durableTask": durable}}


def test_host_json_check_accepts_the_matching_backends() -> None:
    assert check.problems(_host(None), scheduler_enabled=False) == []
    assert check.problems(_host({"type": "AzureStorage", "partitionCount": 4}), scheduler_enabled=False) == []
    dts = {"type": "azureManaged", "connectionStringName": "DURABLE_TASK_SCHEDULER_CONNECTION_STRING"}
    assert check.problems(_host(dts), scheduler_enabled=True) == []


def test_host_json_check_rejects_mismatches() -> None:
    dts = {"type": "azureManaged", "connectionStringName": "DURABLE_TASK_SCHEDULER_CONNECTION_STRING"}
    assert check.problems(_host(dts), scheduler_enabled=False)
    assert check.problems(_host({"type": "AzureStorage"}), scheduler_enabled=True)
    assert check.problems(_host({"type": "azureManaged", "connectionStringName": "OTHER"}), scheduler_enabled=True)
    assert check.problems(_host(None, hub="MyHub"), scheduler_enabled=False)
    assert check.problems({"version": "2.0"}, scheduler_enabled=False)


def test_repository_host_json_matches_the_default_infrastructure() -> None:
    path = ROOT / "host.json"
    assert check.problems(json.loads(path.read_text(encoding="utf-8")), scheduler_enabled=False) == []


# ---------------------------------------------------------------- Event Grid wiring


def test_deployment_parameters_come_from_the_azd_environment() -> None:
    document = wire.deployment_parameters(ENV)
    assert document["parameters"] == {
        "systemTopics": {"value": TOPICS},
        "functionAppResourceId": {"value": APP_ID},
        "functionName": {"value": "on_arc_machine_written"},
    }


def test_deployment_parameters_name_what_is_missing() -> None:
    with pytest.raises(wire.HookError, match="AZURE_FUNCTION_APP_ID"):
        wire.deployment_parameters({k: v for k, v in ENV.items() if k != "AZURE_FUNCTION_APP_ID"})
    with pytest.raises(wire.HookError, match="not JSON"):
        wire.deployment_parameters({**ENV, "EVENT_GRID_SYSTEM_TOPICS": "[oops"})
    with pytest.raises(wire.HookError, match="without"):
        wire.deployment_parameters({**ENV, "EVENT_GRID_SYSTEM_TOPICS": json.dumps([{"name": "t"}])})


def test_deployment_command_deploys_the_event_subscriptions_template() -> None:
    command = wire.deployment_command("az", ENV, "/tmp/p.json")
    assert command[:4] == ["az", "deployment", "sub", "create"]
    assert command[command.index("--template-file") + 1] == str(INFRA / "event-subscriptions.bicep")
    assert command[command.index("--parameters") + 1] == "@/tmp/p.json"
    assert command[command.index("--subscription") + 1] == ENV["AZURE_SUBSCRIPTION_ID"]
    assert command[command.index("--location") + 1] == ENV["AZURE_LOCATION"]
    assert Path(command[command.index("--template-file") + 1]).is_file()


def test_waits_until_the_function_is_listed() -> None:
    calls: list[Sequence[str]] = []
    answers = iter([1, 1, 0])

    def run(command: Sequence[str]) -> int:
        calls.append(command)
        return next(answers)

    sleeps: list[float] = []
    wire.wait_for_function("az", ENV, run=run, sleep=sleeps.append, interval_s=5)
    assert len(calls) == 3 and sleeps == [5, 5]
    assert calls[0][:4] == ["az", "rest", "--method", "get"]
    url = calls[0][calls[0].index("--url") + 1]
    assert url == f"{APP_ID}/functions/on_arc_machine_written?api-version={wire.WEB_API_VERSION}"


def test_gives_up_with_a_clear_message() -> None:
    with pytest.raises(wire.HookError, match="on_arc_machine_written"):
        wire.wait_for_function("az", ENV, timeout_s=0, run=lambda command: 1, sleep=lambda seconds: None)


def test_reads_the_azd_environment_when_the_process_lacks_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wire.shutil, "which", lambda name: f"/usr/bin/{name}")
    seen: list[Sequence[str]] = []

    def run(command: Sequence[str]) -> str:
        seen.append(command)
        return json.dumps(ENV)

    values = wire.azd_environment({"PATH": "/usr/bin"}, run=run)
    assert seen == [["/usr/bin/azd", "env", "get-values", "--output", "json"]]
    assert values["AZURE_FUNCTION_APP_ID"] == APP_ID and values["PATH"] == "/usr/bin"
    assert wire.azd_environment(ENV, run=lambda command: pytest.fail("azd asked needlessly")) == ENV
