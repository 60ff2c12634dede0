"""Function discovery, HTTP route templates, app loading and timer-trigger schedules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from arc_hotpatch.clocks import VirtualClock
from arc_hotpatch.durable_host import DurableHost, FunctionAppError, load_app
from arc_hotpatch.durable_host.functions import FunctionRegistry, resolve_setting
from core.ncrontab import CronSchedule, IntervalSchedule, ScheduleError, parse_schedule

from . import sample_app


def test_registry_indexes_every_function_by_trigger():
    registry = FunctionRegistry(sample_app.app)
    assert {"sequence", "parent", "child", "counter"} <= registry.orchestrator_names()
    assert registry.activity_names() == {"add_one", "echo", "flaky", "bump", "boom", "shout", "sleeper"}
    assert registry.orchestrator("SEQUENCE") is registry.orchestrator("sequence")  # case-insensitive
    http_start = registry.function("http_start")
    assert http_start.trigger_type == "httpTrigger" and http_start.trigger_param == "req"
    assert [c.param_name for c in http_start.durable_clients] == ["client"]
    assert registry.function("nightly").trigger["schedule"] == "%NIGHTLY_SCHEDULE%"
    assert registry.function("on_machine_write").trigger_type == "eventGridTrigger"


def test_get_functions_can_be_indexed_by_several_hosts():
    # FunctionApp.get_functions() refuses a second call by default; the host keeps it usable.
    with DurableHost(sample_app.app, VirtualClock()) as first, DurableHost(sample_app.app, VirtualClock()) as second:
        assert first.registry.functions.keys() == second.registry.functions.keys()
    assert len(sample_app.app.get_functions()) == len(first.registry.functions)


def test_route_templates():
    registry = FunctionRegistry(sample_app.app)

    def match(path: str) -> list[tuple[str, dict[str, str]]]:
        return [(route.function.name, params) for route, params in registry.match_route(path)]

    assert match("/start/sequence") == [("http_start", {"orchestrator": "sequence"})]
    assert match("/START/sequence/") == [("http_start", {"orchestrator": "sequence"})]  # case-insensitive
    assert match("/instances/abc/approve") == [("http_approve", {"instanceId": "abc"})]
    assert match("/instances/abc") == [("http_instance", {"instanceId": "abc"})]
    assert match("/hello/alice") == [("hello", {"name": "alice"})]
    assert match("/hello/4lice") == []
    assert match("/start") == []
    routes = {route.function.name: route for route in registry.routes}
    assert routes["http_start"].methods == {"POST"} and routes["http_start"].auth_level == "function"
    assert routes["admin_only"].methods is None and routes["admin_only"].auth_level == "admin"
    assert routes["hello"].auth_level == "anonymous"


def test_load_app(tmp_path, monkeypatch):
    (tmp_path / "my_functions.py").write_text(
        "import azure.durable_functions as df\n"
        "application = df.DFApp()\n"
        "@application.activity_trigger(input_name='x')\n"
        "def double(x: int) -> int:\n"
        "    return 2 * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    app = load_app("my_functions:application")
    assert [f.get_function_name() for f in app.get_functions()] == ["double"]
    assert load_app("tests.durable_host.sample_app:app") is sample_app.app
    with pytest.raises(FunctionAppError, match="cannot import module"):
        load_app("no_such_module_anywhere:app")
    with pytest.raises(FunctionAppError, match="has no attribute"):
        load_app("my_functions:missing")
    with pytest.raises(FunctionAppError, match=r"not an azure\.functions FunctionApp"):
        load_app("my_functions:double")


def test_app_settings_resolve_from_the_environment(monkeypatch):
    monkeypatch.setenv("HUB", "fleet")
    assert resolve_setting("%HUB%") == "fleet"
    assert resolve_setting("prefix-%HUB%") == "prefix-fleet"
    assert resolve_setting(None) is None
    monkeypatch.delenv("HUB")
    with pytest.raises(FunctionAppError, match="'HUB'"):
        resolve_setting("%HUB%")


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expression", "after", "expected"),
    [
        ("0 */5 * * * *", _utc(2026, 1, 5, 8, 1, 30), _utc(2026, 1, 5, 8, 5, 0)),
        ("0 */5 * * * *", _utc(2026, 1, 5, 8, 5, 0), _utc(2026, 1, 5, 8, 10, 0)),  # strictly after
        ("0 0 2 * * *", _utc(2026, 1, 5, 8, 0, 0), _utc(2026, 1, 6, 2, 0, 0)),
        ("0 30 9 * * Mon-Fri", _utc(2026, 1, 10, 12, 0, 0), _utc(2026, 1, 12, 9, 30, 0)),  # Sat -> Mon
        ("0 0 0 1 * *", _utc(2026, 1, 31, 0, 0, 0), _utc(2026, 2, 1, 0, 0, 0)),
        ("0 0 12 29 Feb *", _utc(2026, 3, 1, 0, 0, 0), _utc(2028, 2, 29, 12, 0, 0)),  # next leap day
        ("15,45 0 0 * * 0", _utc(2026, 1, 4, 0, 0, 20), _utc(2026, 1, 4, 0, 0, 45)),  # Sunday = 0
        ("0 0 6-18/6 * * *", _utc(2026, 1, 5, 6, 0, 0), _utc(2026, 1, 5, 12, 0, 0)),
        ("0 0 0 * * 7", _utc(2026, 1, 5, 0, 0, 0), _utc(2026, 1, 11, 0, 0, 0)),  # 7 also means Sunday
    ],
)
def test_ncrontab_next_occurrence(expression: str, after: datetime, expected: datetime):
    assert CronSchedule.parse(expression).next_after(after) == expected


def test_timespan_schedules_and_errors():
    schedule = parse_schedule("01:30:00")
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.next_after(_utc(2026, 1, 5)) == _utc(2026, 1, 5) + timedelta(hours=1, minutes=30)
    assert parse_schedule("1.00:00:00").interval == timedelta(days=1)  # type: ignore[union-attr]
    for bad in ("* * * * *", "0 60 * * * *", "0 0 0 31 Foo *", "0 */0 * * * *", "00:00:00", "0 0 0 5-1 * *"):
        with pytest.raises(ScheduleError):
            parse_schedule(bad)
    with pytest.raises(ScheduleError, match="never fires"):
        CronSchedule.parse("0 0 0 31 2 *").next_after(_utc(2026, 1, 1))
