"""``serve --app module:attribute`` as a user runs it on their own app: the official Durable Functions samples'
patterns over real HTTP (the samples' HTTP starter, the status URLs it returns, raising an event), the app's
``local.settings.json`` Values as app settings (the environment wins), and no fleet twin for another app."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import requests
from typer.testing import CliRunner

from arc_hotpatch.cli import app as cli
from tests.rig import FINISHED, REPO, ServeProcess, wait_until

SAMPLES = REPO / "tests" / "durable_host" / "samples" / "samples_app.py"
LOCAL_SETTINGS = {"IsEncrypted": False, "Values": {
    "FUNCTIONS_WORKER_RUNTIME": "python", "AzureWebJobsStorage": "UseDevelopmentStorage=true",
    "SAMPLE_GREETING": "Hej", "SAMPLE_OVERRIDDEN": "from-local-settings"}}
STARTUP_S = 30.0


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    folder = tmp_path_factory.mktemp("my-function-app")
    shutil.copy(SAMPLES, folder / "samples_app.py")
    (folder / "local.settings.json").write_text(json.dumps(LOCAL_SETTINGS))
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("HOTPATCH_", "SAMPLE_"))} | {
        "SAMPLE_OVERRIDDEN": "from-env"}
    serve = ServeProcess(["--app", "samples_app:app", "--port", "0", "--no-auth", "--speed", "600"], cwd=folder,
                         env=environment)
    try:
        base = serve.wait_for({"base": r"listening on (http://127\.0\.0\.1:\d+)"}, STARTUP_S)["base"]
        yield base, serve.printed
    finally:
        serve.stop()


def start(base: str, orchestrator: str, body: Any = None) -> dict[str, Any]:
    response = requests.post(f"{base}/api/orchestrators/{orchestrator}", json=body, timeout=30)
    assert response.status_code == 202, response.text
    urls = response.json()
    assert {"id", "statusQueryGetUri", "sendEventPostUri", "terminatePostUri", "purgeHistoryDeleteUri"} <= set(urls)
    return urls


def finished(urls: dict[str, Any]) -> dict[str, Any]:
    def done() -> dict[str, Any] | None:
        status = requests.get(urls["statusQueryGetUri"], timeout=30).json()
        return status if status["runtimeStatus"] in FINISHED else None

    return wait_until(done, f"{urls['id']} to finish")


def test_another_app_is_served_without_the_fleet_twin_with_its_local_settings(served) -> None:
    _, printed = served
    text = "".join(printed)
    assert "Fleet twin" not in text
    assert "App settings from local.settings.json: AzureWebJobsStorage, FUNCTIONS_WORKER_RUNTIME, SAMPLE_GREETING" \
        in text  # SAMPLE_OVERRIDDEN: the environment's value wins


def test_function_chaining(served) -> None:
    status = finished(start(served[0], "function_chaining"))
    assert (status["runtimeStatus"], status["output"]) == ("Completed", ["Hej Tokyo!", "Hej Seattle!", "Hej London!"])


def test_fan_out_fan_in(served) -> None:
    status = finished(start(served[0], "fan_out_fan_in", {"count": 10}))
    assert (status["runtimeStatus"], status["output"]) == ("Completed", sum(i * i for i in range(1, 11)))


def test_human_interaction(served) -> None:
    urls = start(served[0], "human_interaction")
    wait_until(lambda: requests.get(urls["statusQueryGetUri"], timeout=30).json()["runtimeStatus"] == "Running" or None,
               "the orchestration to run")
    raised = requests.post(urls["sendEventPostUri"].replace("{eventName}", "Approval"), json={"by": "ops"},
                           timeout=30)
    assert raised.status_code == 202, raised.text
    status = finished(urls)
    assert (status["runtimeStatus"], status["output"]) == ("Completed", {"approved": {"by": "ops"}})


def test_monitor(served) -> None:
    status = finished(start(served[0], "monitor", {"id": "job-1", "done_after": 3}))
    assert (status["runtimeStatus"], status["output"]) == ("Completed", {"status": "Completed", "polls": 3})


def test_sub_orchestrations(served) -> None:
    status = finished(start(served[0], "sub_orchestrations"))
    assert (status["runtimeStatus"], status["output"]) == ("Completed", ["HEJ OSLO!", "HEJ LIMA!"])


def test_retries(served) -> None:
    status = finished(start(served[0], "retries"))
    assert (status["runtimeStatus"], status["output"]) == ("Completed", "succeeded on attempt 3")


@pytest.mark.parametrize(
    ("spec", "named"),
    [("not a spec", "expected module:attribute"), ("no_such_module:app", "no module 'no_such_module'"),
     ("samples_app:nothing", "has no attribute 'nothing'"), ("samples_app:os", "not an azure.functions FunctionApp")],
)
def test_an_app_that_cannot_be_served_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str,
                                               named: str) -> None:
    shutil.copy(SAMPLES, tmp_path / "samples_app.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "samples_app", raising=False)  # this folder's, not an earlier test's
    result = CliRunner().invoke(cli, ["serve", "--app", spec, "--port", "0"])
    assert result.exit_code == 2 and named in result.output, result.output


def test_a_broken_local_settings_file_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(SAMPLES, tmp_path / "samples_app.py")
    (tmp_path / "local.settings.json").write_text('{"Values": {"A": {"nested": 1}}}')
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "samples_app", raising=False)
    result = CliRunner().invoke(cli, ["serve", "--app", "samples_app:app", "--port", "0"])
    assert result.exit_code == 2 and "local.settings.json: Values.A must be a string" in result.output


def test_the_fleet_twin_starts_for_the_projects_app_or_with_twin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                                 ) -> None:
    import function_app
    from arc_hotpatch import serving

    def which(app: Any) -> str:
        return "project" if app is function_app.app else type(app).__module__.split(".")[0]

    served_how: list[tuple[str, str]] = []
    monkeypatch.setattr(serving, "run_serve", lambda *, app, **_: served_how.append(("twin", which(app))))
    monkeypatch.setattr(serving, "run_serve_app", lambda *, app, **_: served_how.append(("alone", which(app))))
    assert CliRunner().invoke(cli, ["serve", "--port", "0"]).exit_code == 0  # the project's own app
    shutil.copy(SAMPLES, tmp_path / "samples_app.py")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "samples_app", raising=False)
    assert CliRunner().invoke(cli, ["serve", "--app", "samples_app:app", "--port", "0"]).exit_code == 0
    assert CliRunner().invoke(cli, ["serve", "--app", "samples_app:app", "--twin", "--port", "0"]).exit_code == 0
    assert [how for how, _ in served_how] == ["twin", "alone", "twin"]
    assert served_how[0][1] == "project" and served_how[1][1] != "project" and served_how[2][1] != "project"
    refused = CliRunner().invoke(cli, ["serve", "--app", "samples_app:app", "--port", "0", "--dry-run"])
    assert refused.exit_code == 2 and "policy flags apply to the project's app" in refused.output
