"""Bad input to the kit is one line naming what was wrong (never a traceback), found before any run starts:
--start and --speed out of range, scenario, faults and local.settings.json files that are not UTF-8 JSON or hold
numbers the twin cannot use, report paths that cannot be written, a value after a boolean flag; and a failed
rollout is one line too (exit 1)."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from arc_hotpatch import cli, runner
from arc_hotpatch.apps import AppError, read_local_settings
from arc_hotpatch.cli import app
from arc_hotpatch.policy_flags import UnexpectedArgument, parse_policy_flags
from arc_hotpatch.runner import RolloutFailed
from arc_hotpatch.twin import FaultsError, ScenarioError, load_faults, load_scenario
from arc_hotpatch.twin.process import TwinProcess

from .test_kit_inputs import EMPTY_REPORT, one_line_error

NOT_UTF8 = b'{"groups": [{"machine": {"name": "caf\xe9"}}]}'
TOO_DEEP = "[" * 100_000 + "]" * 100_000
INFINITY = float("inf")


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bad input must be refused before the simulation starts."""

    def refuse(*_: Any, **__: Any) -> None:
        raise AssertionError("the simulation started")

    monkeypatch.setattr(runner, "run_simulation", refuse)


def invoke(*args: str) -> tuple[int, str]:
    """Exit code and the one error line of ``python -m arc_hotpatch args``."""
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, one_line_error(result.output)


def write(path: Path, content: str | bytes | dict[str, Any]) -> Path:
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


# --- 1. a failed rollout ------------------------------------------------------------------------------


def test_a_failed_rollout_is_one_line_with_its_cause(tmp_path: Path) -> None:
    faults = write(tmp_path / "throttled.json", {"arm_throttle_rate": 1})
    report = tmp_path / "out" / "r.json"
    code, line = invoke("simulate", "--machines", "1", "--faults", str(faults), "--report", str(report))
    assert code == 1
    assert line.startswith("error: rollout failed: ") and "TooManyRequests" in line
    assert "TooManyRequests" in json.loads(report.read_text())["error"]  # what it had, with the error


def test_a_failed_rollout_shows_the_first_line_of_its_cause(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*_: Any, **__: Any) -> None:
        raise RolloutFailed("the rollout did not finish: boom\n  a second line", {})

    monkeypatch.setattr(runner, "run_simulation", failing)
    assert invoke("simulate", "--machines", "1") == (1, "error: rollout failed: the rollout did not finish: boom")


def test_a_twin_that_does_not_start_is_a_failed_rollout(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(self: TwinProcess) -> str:
        raise RuntimeError("the fleet twin process failed to start: OverflowError: date value out of range")

    monkeypatch.setattr(TwinProcess, "start", broken)
    with pytest.raises(RolloutFailed, match="failed to start: OverflowError"):
        runner.run_simulation(load_scenario({"groups": [{"machine": {}}]}), cli.SIMULATE_BASE)


# --- 2. --start ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("start", ["0001-01-01", "9999-12-31", "1999-12-31", "2101-01-01",
                                   "9999-12-31T23:00:00-05:00", "0001-01-01T00:00:00+05:00"])
def test_start_out_of_range_is_named(no_run: None, start: str) -> None:
    code, line = invoke("simulate", "--machines", "1", "--start", start)
    assert code == 2 and line == f"error: --start {start!r}: expected a date in the years 2000-2100"


def test_start_within_range_is_accepted() -> None:
    assert cli.parse_start("2000-01-01").year == 2000 and cli.parse_start("2100-12-31T23:59:59Z").year == 2100


# --- 3. --speed ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["serve", "twin"])
@pytest.mark.parametrize("speed", ["nan", "inf", "-inf", "1e300", "0", "-1"])
def test_speed_must_be_finite_and_bounded(command: str, speed: str) -> None:
    code, line = invoke(command, "--port", "0", "--speed", speed)
    assert code == 2 and line.startswith("error: --speed ") and "expected a number > 0 and at most 1,000,000" in line


def test_speed_at_the_bound_is_accepted() -> None:
    assert cli.check_speed(cli.MAX_SPEED) == cli.MAX_SPEED and cli.check_speed(0.5) == 0.5


# --- 4. input files that are not UTF-8 JSON ------------------------------------------------------------


@pytest.mark.parametrize(("content", "why"), [(NOT_UTF8, "not UTF-8 text (byte 0xe9 at offset 37)"),
                                               (TOO_DEEP, "not valid JSON (nested too deeply)")],
                         ids=["not-utf8", "too-deep"])
def test_scenario_and_faults_files_that_are_not_utf8_json_are_named(no_run: None, tmp_path: Path,
                                                                    content: str | bytes, why: str) -> None:
    path = write(tmp_path / "bad.json", content)
    assert invoke("simulate", "--scenario", str(path)) == (2, f"error: scenario file {path}: {why}")
    assert invoke("simulate", "--machines", "1", "--faults", str(path)) == (
        2, f"error: --faults: faults file {path}: {why}")


@pytest.mark.parametrize(("content", "why"), [(NOT_UTF8, "not UTF-8 text"), (TOO_DEEP, "nested too deeply"),
                                               ("{", "not valid JSON")], ids=["not-utf8", "too-deep", "not-json"])
def test_a_local_settings_file_that_is_not_utf8_json_is_named(tmp_path: Path, content: str | bytes,
                                                               why: str) -> None:
    path = write(tmp_path / "local.settings.json", content)
    with pytest.raises(AppError, match=why) as caught:
        read_local_settings(tmp_path)
    assert str(caught.value).startswith(f"{path}: ")


def test_serve_names_a_local_settings_file_that_is_not_utf8(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path / "bad_settings_app.py", "")  # found, never imported: the settings are read first
    write(tmp_path / "local.settings.json", NOT_UTF8)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    code, line = invoke("serve", "--app", "bad_settings_app:app", "--port", "0")
    assert code == 2 and line.endswith("local.settings.json: not UTF-8 text (byte 0xe9 at offset 37)")
    assert "bad_settings_app" not in sys.modules


# --- 5. scenario numbers the twin cannot use --------------------------------------------------------------


@pytest.mark.parametrize(("attribute", "value"), [
    ("enable_minutes", 1e308), ("enable_minutes", INFINITY), ("enable_minutes", float("nan")),
    ("reboot_minutes", INFINITY), ("reboot_minutes", 10**400), ("reboot_minutes", 10081), ("reboot_minutes", -1),
])
def test_scenario_minutes_must_be_finite_and_bounded(no_run: None, tmp_path: Path, attribute: str,
                                                     value: float) -> None:
    path = write(tmp_path / "s.json", {"groups": [{"machine": {"name": "ok"}}, {"machine": {attribute: value}}]})
    code, line = invoke("simulate", "--scenario", str(path))
    assert code == 2 and line.startswith(f"error: groups[1].machine.{attribute}: ")
    assert line.endswith("expected a number of minutes from 0 to 10080")
    assert getattr(load_scenario({"groups": [{"machine": {attribute: 10080}}]}).machines[0], attribute) == 10080


@pytest.mark.parametrize(("attribute", "value"), [("vbs_status", 2.0), ("vbs_status", True), ("vbs_status", False),
                                                  ("status", 1)])
def test_scenario_choices_must_have_their_type(no_run: None, tmp_path: Path, attribute: str, value: Any) -> None:
    path = write(tmp_path / "s.json", {"groups": [{"machine": {attribute: value}}]})
    code, line = invoke("simulate", "--scenario", str(path))
    assert code == 2 and line.startswith(f"error: groups[0].machine.{attribute}: {value!r} is not accepted")
    assert load_scenario({"groups": [{"machine": {"vbs_status": 1}}]}).machines[0].vbs_status == 1


# --- 6. faults files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", [[], {}, 1, None])
def test_a_preset_that_is_not_a_name_is_named(no_run: None, tmp_path: Path, preset: Any) -> None:
    path = write(tmp_path / "f.json", {"preset": preset})
    code, line = invoke("simulate", "--machines", "1", "--faults", str(path))
    assert code == 2 and line == f"error: --faults: faults.preset: {preset!r} is not accepted; expected one of " \
                                 "none, chaos"


@pytest.mark.parametrize(("key", "value"), [
    ("agent_flap_minutes", [1e308, 1e308]), ("agent_flap_minutes", [INFINITY, INFINITY]),
    ("agent_flap_minutes", [1, 10081]), ("slow_reboot_extra_minutes", [0, INFINITY]),
    ("retry_after_seconds", [1, INFINITY]), ("retry_after_seconds", [1, 3601]),
    ("agent_flap_window_minutes", INFINITY), ("agent_flap_window_minutes", 10**400),
    ("arm_throttle_rate", float("nan")),
])
def test_faults_numbers_must_be_finite_and_bounded(no_run: None, tmp_path: Path, key: str, value: Any) -> None:
    path = write(tmp_path / "f.json", {key: value})
    code, line = invoke("simulate", "--machines", "1", "--faults", str(path))
    assert code == 2 and line.startswith(f"error: --faults: faults.{key}: ") and "is not accepted" in line


def test_faults_at_the_bounds_are_accepted() -> None:
    faults = load_faults({"agent_flap_minutes": [0, 10080], "retry_after_seconds": [1, 3600],
                          "agent_flap_window_minutes": 10080})
    assert faults.agent_flap_minutes == (0, 10080) and faults.retry_after_seconds == (1, 3600)
    with pytest.raises(FaultsError, match=r"faults\.preset"):
        load_faults({"preset": ["chaos"]})


def test_the_loaders_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.json", NOT_UTF8)
    with pytest.raises(ScenarioError, match=re.escape(f"scenario file {path}: not UTF-8")):
        load_scenario(path)
    with pytest.raises(FaultsError, match=re.escape(f"faults file {path}: not UTF-8")):
        load_faults(path)


# --- 7. report paths --------------------------------------------------------------------------------------


@pytest.mark.parametrize("flag", ["--report", "--html", "--csv"])
def test_a_folder_as_report_path_is_refused_up_front(no_run: None, tmp_path: Path, flag: str) -> None:
    assert invoke("simulate", "--machines", "1", flag, str(tmp_path)) == (
        2, f"error: {flag} {tmp_path}: is a folder; expected a file name")


def test_a_report_path_under_a_file_is_refused_up_front(no_run: None, tmp_path: Path) -> None:
    file = write(tmp_path / "file", "x")
    code, line = invoke("simulate", "--machines", "1", "--csv", str(file / "sub" / "r.csv"))
    assert code == 2 and line == f"error: --csv {file / 'sub' / 'r.csv'}: {file} is not a folder"


@pytest.mark.skipif(not Path("/proc/version").is_file(), reason="Linux's /proc")
def test_an_unwritable_report_path_is_refused_up_front(no_run: None) -> None:
    code, line = invoke("simulate", "--machines", "1", "--csv", "/proc/version")
    assert code == 2 and line.startswith("error: --csv /proc/version: cannot be written")


def test_plan_checks_its_report_paths_before_it_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runner, "run_plan", lambda *_, **__: pytest.fail("the plan started"))
    assert invoke("plan", "--report", str(tmp_path)) == (2, f"error: --report {tmp_path}: is a folder; "
                                                            "expected a file name")


def test_the_checks_leave_nothing_behind(no_run: None, tmp_path: Path) -> None:
    new, nested = tmp_path / "new.json", tmp_path / "a" / "b" / "r.html"
    code, _ = invoke("simulate", "--machines", "1", "--report", str(new), "--html", str(nested), "--csv", str(tmp_path))
    assert code == 2 and not new.exists() and not (tmp_path / "a").exists()


def test_a_report_that_cannot_be_written_at_the_end_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    target = tmp_path / "later" / "r.json"

    def run_then_block(*_: Any, **__: Any) -> dict[str, Any]:
        target.mkdir(parents=True)  # the path turns into a folder while the run goes on
        return EMPTY_REPORT

    monkeypatch.setattr(runner, "run_simulation", run_then_block)
    code, line = invoke("simulate", "--machines", "1", "--report", str(target))
    assert code == 1 and line.startswith(f"error: --report {target}: cannot be written")


# --- 8. a boolean flag takes no value ---------------------------------------------------------------------


@pytest.mark.parametrize("command", ["simulate", "plan"])
def test_a_value_after_a_boolean_flag_is_an_unexpected_argument(no_run: None, command: str) -> None:
    code, line = invoke(command, "--dry-run", "maybe")
    assert code == 2 and line.startswith("error: unexpected argument 'maybe': --dry-run takes no value")


def test_a_stray_word_is_an_unexpected_argument() -> None:
    with pytest.raises(UnexpectedArgument, match="unexpected argument 'auto': expected a flag"):
        parse_policy_flags(["--reboot-policy", "auto", "auto"])
    with pytest.raises(UnexpectedArgument, match="--dry-run takes no value"):
        parse_policy_flags(["--no-dry-run", "yes"])
    assert parse_policy_flags(["--dry-run", "--concurrency", "3"]) == {"dry_run": True, "concurrency": "3"}


def test_a_misspelt_hotpatch_variable_is_warned_about(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOTPATCH_CONCURENCY", "5")
    result = CliRunner().invoke(app, ["simulate", "--machines", "2", "--concurrency", "0"])
    assert "warning: HOTPATCH_CONCURENCY is not a HOTPATCH setting" in result.output, result.output
    assert result.exit_code == 2  # and the run stops at the bad flag, as before
