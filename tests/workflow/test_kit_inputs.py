"""The kit's inputs: bounded fleets, one-line port errors, simulate/serve honouring the HOTPATCH_* app
settings of the environment, and ``plan`` failing loudly (non-zero, report written) when ARM refuses."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from arc_hotpatch import cli, runner, serving
from arc_hotpatch.cli import app
from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.twin import FleetTwin
from arc_hotpatch.twin.fleet import MAX_MACHINES, FleetTooLarge, generate_fleet, load_scenario

SUB_A = "11111111-1111-1111-1111-111111111111"
SUB_B = "22222222-2222-2222-2222-222222222222"
NOT_IN_TWIN = "33333333-3333-3333-3333-333333333333"
TWO_SUBSCRIPTIONS = {"seed": 5, "subscriptions": [SUB_A, SUB_B], "groups": [
    {"count": 2, "machine": {"name": "a", "subscription": 0}},
    {"count": 1, "machine": {"name": "b", "subscription": 1}},
]}
EMPTY_REPORT = {"summary": {"machines": 0, "by_state": {}, "reboots": 0, "escalations": 0}, "machines": []}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for key in [k for k in os.environ if k.startswith("HOTPATCH_")]:
        monkeypatch.delenv(key)
    return monkeypatch


@pytest.fixture
def scenario_file(tmp_path: Path) -> Path:
    path = tmp_path / "two.json"
    path.write_text(json.dumps(TWO_SUBSCRIPTIONS))
    return path


def one_line_error(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: "), output
    assert "Traceback" not in output, output
    return lines[-1]


# --- bounded fleets ----------------------------------------------------------------------------------


def test_scenario_counts_and_generated_fleets_are_bounded() -> None:
    with pytest.raises(FleetTooLarge, match=r"groups\[0\]\.count.*100,000"):
        load_scenario({"groups": [{"count": 10**9, "machine": {}}]})
    with pytest.raises(FleetTooLarge, match=r"groups\[1\]\.count"):  # the total counts, not only each group
        load_scenario({"groups": [{"count": MAX_MACHINES, "machine": {"name": "a"}},
                                  {"count": 1, "machine": {"name": "b"}}]})
    with pytest.raises(FleetTooLarge, match="100,000"):
        generate_fleet(machines=MAX_MACHINES + 1)
    with pytest.raises(FleetTooLarge):
        generate_fleet(machines=10, subscriptions=10**6)


def test_cli_fleet_bounds_are_one_line_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["simulate", "--machines", str(MAX_MACHINES + 1)])
    assert result.exit_code == 2 and "--machines" in one_line_error(result.output)
    huge = tmp_path / "huge.json"
    huge.write_text(json.dumps({"groups": [{"count": 10**9, "machine": {}}]}))
    result = CliRunner().invoke(app, ["twin", "--scenario", str(huge)])
    assert result.exit_code == 2 and "count" in one_line_error(result.output)


# --- ports -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "twin"])
def test_port_out_of_range_is_one_line(command: str) -> None:
    result = CliRunner().invoke(app, [command, "--port", "70000"])
    assert result.exit_code == 2
    assert one_line_error(result.output) == "error: --port 70000: expected 0-65535"


@pytest.mark.parametrize("command", ["serve", "twin"])
def test_port_in_use_is_one_line(command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(app, [command, "--port", str(port), "--machines", "1"])
    assert result.exit_code == 2
    assert one_line_error(result.output) == f"error: port {port} on 127.0.0.1 is in use"


def test_a_server_that_loses_the_race_for_its_port_is_one_line() -> None:
    import errno

    def bind() -> None:
        raise OSError(errno.EADDRINUSE, "address already in use")

    with pytest.raises(cli.typer.Exit) as stopped, cli.port_errors(8080):
        bind()
    assert stopped.value.exit_code == 2


# --- simulate and serve honour the environment's app settings ------------------------------------------


def test_simulate_scope_and_policy_come_from_the_environment(clean_env, scenario_file: Path, tmp_path: Path) -> None:
    clean_env.setenv("HOTPATCH_SUBSCRIPTIONS", SUB_B)
    clean_env.setenv("HOTPATCH_DRY_RUN", "true")
    clean_env.setenv("HOTPATCH_REBOOT_POLICY", "never")
    clean_env.setenv("HOTPATCH_ARM_ENDPOINT", "https://management.example.test")  # the twin decides this one
    report = tmp_path / "r.json"
    result = CliRunner().invoke(app, ["simulate", "--scenario", str(scenario_file), "--report", str(report),
                                      "--reboot-policy", "window"])  # a flag overrides the setting
    assert result.exit_code == 0, result.output
    assert "reboot policy window" in result.output and "dry run" in result.output
    rows = json.loads(report.read_text())["machines"]
    assert {row["name"] for row in rows} == {"b"}, "only the subscription HOTPATCH_SUBSCRIPTIONS names"
    assert {row["state"] for row in rows} == {"planned"}


def test_simulate_rejects_a_subscription_the_twin_does_not_have(clean_env, scenario_file: Path) -> None:
    clean_env.setenv("HOTPATCH_SUBSCRIPTIONS", NOT_IN_TWIN)
    result = CliRunner().invoke(app, ["simulate", "--scenario", str(scenario_file)])
    assert result.exit_code == 2
    line = one_line_error(result.output)
    assert "HOTPATCH_SUBSCRIPTIONS" in line and NOT_IN_TWIN in line
    clean_env.setenv("HOTPATCH_SUBSCRIPTIONS", SUB_A)
    clean_env.setenv("HOTPATCH_REBOOT_POLICY", "sometimes")
    result = CliRunner().invoke(app, ["simulate", "--scenario", str(scenario_file)])
    assert result.exit_code == 2 and "HOTPATCH_REBOOT_POLICY" in one_line_error(result.output)


def test_simulate_puts_a_flag_webhook_in_the_environment_for_the_run(clean_env, monkeypatch) -> None:
    seen: dict[str, Any] = {}

    def fake_simulation(fleet: Any, policy: Any, **_: Any) -> dict[str, Any]:
        seen["env"] = os.environ.get("HOTPATCH_ESCALATION_WEBHOOK")
        seen["reboot_policy"] = policy.reboot_policy
        return EMPTY_REPORT

    monkeypatch.setattr(runner, "run_simulation", fake_simulation)
    url = "https://hooks.example.test/escalate?sig=secret"
    result = CliRunner().invoke(app, ["simulate", "--machines", "2", "--escalation-webhook", url])
    assert result.exit_code == 0, result.output
    assert seen == {"env": url, "reboot_policy": "auto"}  # SIMULATE_BASE where the environment says nothing
    assert "HOTPATCH_ESCALATION_WEBHOOK" not in os.environ, "restored after the run"
    result = CliRunner().invoke(app, ["simulate", "--machines", "2", "--escalation-webhook=ftp://x"])
    assert result.exit_code == 2 and "--escalation-webhook" in one_line_error(result.output)


def test_serve_keeps_the_environment_scope_and_restores_the_environment(clean_env, monkeypatch,
                                                                          scenario_file: Path) -> None:
    seen: dict[str, Any] = {}

    def fake_serve(*, fleet: Any, policy: Any, **_: Any) -> None:
        seen["policy"] = policy
        seen["webhook"] = os.environ.get("HOTPATCH_ESCALATION_WEBHOOK")
        os.environ["HOTPATCH_SCRIBBLE"] = "x"  # what run_serve writes is undone when serve ends

    monkeypatch.setattr(serving, "run_serve", fake_serve)
    clean_env.setenv("HOTPATCH_SUBSCRIPTIONS", SUB_A)
    clean_env.setenv("HOTPATCH_CONCURRENCY", "3")
    result = CliRunner().invoke(app, ["serve", "--port", "0", "--scenario", str(scenario_file),
                                      "--escalation-webhook", "https://hooks.example.test/h"])
    assert result.exit_code == 0, result.output
    assert seen["policy"].subscriptions == (SUB_A,) and seen["policy"].concurrency == 3
    assert seen["policy"].reboot_policy == "approval", "serve keeps the app's own default"
    assert seen["webhook"] == "https://hooks.example.test/h"
    assert "HOTPATCH_SCRIBBLE" not in os.environ and "HOTPATCH_ESCALATION_WEBHOOK" not in os.environ
    assert os.environ["HOTPATCH_SUBSCRIPTIONS"] == SUB_A


def test_served_settings_name_only_the_scoped_subscriptions() -> None:
    fleet = load_scenario(TWO_SUBSCRIPTIONS)
    assert runner.twin_scope((), fleet.subscription_ids) == (SUB_A, SUB_B)
    assert runner.twin_scope((SUB_B.upper(),), fleet.subscription_ids) == (SUB_B,)
    with pytest.raises(ValueError, match=NOT_IN_TWIN):
        runner.twin_scope((NOT_IN_TWIN,), fleet.subscription_ids)
    policy = runner.replace(cli.Policy(), subscriptions=(SUB_B,))
    assert serving.policy_environment(policy)["HOTPATCH_SUBSCRIPTIONS"] == SUB_B
    # The webhook is a secret the policy's JSON blanks: never written empty over the environment's own.
    assert "HOTPATCH_ESCALATION_WEBHOOK" not in serving.policy_environment(policy)
    hooked = runner.replace(policy, escalation_webhook="https://hooks.example.test/h?sig=1")
    assert serving.policy_environment(hooked)["HOTPATCH_ESCALATION_WEBHOOK"] == "https://hooks.example.test/h?sig=1"


# --- plan ---------------------------------------------------------------------------------------------


class Refusing(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"error": {"code": "InvalidAuthenticationToken", "message": "The access token is invalid."}}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def refusing_arm(clean_env) -> Iterator[str]:
    """An ARM endpoint (HTTPS, the twin's certificate; its CA trusted as HOTPATCH_ARM_CA_FILE) that answers 401."""
    from arc_hotpatch.twin.tls import twin_tls

    tls = twin_tls()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    server.socket = tls.context.wrap_socket(server.socket, server_side=True)
    clean_env.setenv("HOTPATCH_ARM_CA_FILE", str(tls.ca_file))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_plan_against_arm_that_refuses_exits_non_zero_with_its_report(clean_env, refusing_arm: str,
                                                                       tmp_path: Path) -> None:
    report = tmp_path / "plan.json"
    result = CliRunner().invoke(app, ["plan", "--arm-endpoint", refusing_arm, "--subscriptions", SUB_A,
                                      "--report", str(report)])
    assert result.exit_code == 1, result.output
    line = one_line_error(result.output)
    assert "401" in line and refusing_arm in line
    written = json.loads(report.read_text())
    assert "401" in written["error"]


def test_plan_without_a_reachable_arm_exits_non_zero(clean_env, tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]  # closed when the block ends: nothing listens there
    result = CliRunner().invoke(app, ["plan", "--arm-endpoint", f"https://127.0.0.1:{port}",
                                      "--report", str(tmp_path / "p.json")])
    assert result.exit_code == 1, result.output
    assert "cannot reach ARM" in one_line_error(result.output)
    plain = CliRunner().invoke(app, ["plan", "--arm-endpoint", f"http://127.0.0.1:{port}"])
    assert plain.exit_code == 1 and "is not an https URL: bearer tokens go over TLS only" in plain.output
    assert json.loads((tmp_path / "p.json").read_text())["error"]


def test_plan_without_credentials_exits_non_zero(clean_env, monkeypatch) -> None:
    class NoSignIn:
        def get_token(self, *scopes: str, **kwargs: Any) -> Any:
            from azure.core.exceptions import ClientAuthenticationError

            raise ClientAuthenticationError("DefaultAzureCredential failed to retrieve a token.\nmore lines")

    import core.azure_clients as azure_clients

    monkeypatch.setattr(azure_clients, "_credential_for", lambda endpoint, token: NoSignIn())
    result = CliRunner().invoke(app, ["plan", "--arm-endpoint", "https://management.example.test",
                                      "--subscriptions", SUB_A])
    assert result.exit_code == 1, result.output
    assert one_line_error(result.output) == (
        "error: plan failed: cannot authenticate to https://management.example.test: "
        "DefaultAzureCredential failed to retrieve a token.")


def test_plan_against_the_twin_shows_progress_and_fails_on_an_unreadable_subscription(
        clean_env, monkeypatch, tmp_path: Path) -> None:
    clock = VirtualClock()
    monkeypatch.setattr(runner, "SystemClock", lambda: clock)  # the twin's virtual time, not hours of real time
    with FleetTwin(load_scenario(TWO_SUBSCRIPTIONS), clock) as twin:
        clean_env.setenv("HOTPATCH_ARM_CA_FILE", twin.ca_file or "")  # as a user trusts the twin's CA
        report, page = tmp_path / "ok.json", tmp_path / "ok.html"
        result = CliRunner().invoke(app, ["plan", "--arm-endpoint", twin.base_url or "", "--report", str(report),
                                          "--html", str(page), "--csv", str(tmp_path / "ok.csv")])
        assert result.exit_code == 0, result.output
        assert 'data-total="machines"><b>3</b>' in page.read_text()  # plan --html: the same page
        assert len((tmp_path / "ok.csv").read_text().splitlines()) == 1 + 3
        assert "progress: 3/3 machines done" in result.output  # not a terminal: progress lines
        assert json.loads(report.read_text())["summary"]["machines"] == 3

        clean_env.setenv("HOTPATCH_SUBSCRIPTIONS", f"{SUB_A},{NOT_IN_TWIN}")
        report = tmp_path / "part.json"
        result = CliRunner().invoke(app, ["plan", "--arm-endpoint", twin.base_url or "", "--report", str(report)])
        assert result.exit_code == 1, result.output
        line = one_line_error(result.output)
        assert NOT_IN_TWIN in line and "could not be read" in line
        written = json.loads(report.read_text())
        assert {row["name"] for row in written["machines"]} == {"a-1", "a-2"} and written["error"]
