"""Injected faults: configuration, and reproducibility from the seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import requests
from azure.core.exceptions import HttpResponseError

from arc_hotpatch.twin import CHAOS, NO_FAULTS, Faults, FaultsError, load_faults
from core.azure_clients import MAX_SDK_WAIT_S

from .helpers import MachineDriver

FLEET = {"seed": 31, "groups": [{"count": 4, "machine": {"name": "m"}}]}
AUTH = {"Authorization": "Bearer t"}


def test_presets_and_files(tmp_path: Path):
    assert load_faults(None) is NO_FAULTS and load_faults("none") is NO_FAULTS
    assert load_faults("chaos") is CHAOS
    assert CHAOS.arm_throttle_rate > 0 and CHAOS.arm_server_error_rate > 0 and CHAOS.lost_run_result_rate > 0
    assert CHAOS.slow_reboot_rate > 0 and CHAOS.agent_flap_rate > 0
    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"preset": "chaos", "arm_throttle_rate": 0.5, "retry_after_seconds": [2, 3]}))
    faults = load_faults(path)
    assert faults.name == "faults.json" and faults.arm_throttle_rate == 0.5 and faults.retry_after_seconds == (2, 3)
    assert faults.lost_run_result_rate == CHAOS.lost_run_result_rate
    assert load_faults({"lost_run_result_rate": 1}).lost_run_result_rate == 1.0


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"arm_throtle_rate": 0.1}, "unknown key 'arm_throtle_rate'"),
        ({"arm_throttle_rate": 1.5}, "faults.arm_throttle_rate: 1.5 is not accepted; expected a rate from 0 to 1"),
        ({"agent_flap_minutes": [5, 2]}, "faults.agent_flap_minutes: [5, 2]"),
        ({"retry_after_seconds": [0.5, 2]}, "expected whole seconds >= 1"),
        ({"preset": "mayhem"}, "faults.preset: 'mayhem'"),
        ({"seed": "x"}, "faults.seed: 'x'"),
        ({"agent_flap_window_minutes": 0}, "faults.agent_flap_window_minutes: 0"),
        ("no-such-file.json", "expected none, chaos or a JSON file"),
    ],
)
def test_invalid_faults_name_the_problem(spec, message):
    with pytest.raises(FaultsError) as error:
        load_faults(spec)
    assert message in str(error.value)


def _statuses(harness, count: int = 60) -> list[int]:
    base = f"{harness.url}/subscriptions/{harness.twin.subscription_ids[0]}/resourceGroups/rg-arc-servers/providers/"
    statuses = []
    for index in range(count):
        url = f"{base}Microsoft.HybridCompute/machines/m-{index % 4 + 1}?api-version=2025-01-13"
        statuses.append(requests.get(url, headers=AUTH, timeout=10).status_code)
    return statuses


def test_http_faults_are_reproducible_from_the_seed(make_twin):
    faults = Faults(name="test", arm_throttle_rate=0.2, arm_server_error_rate=0.1, retry_after_seconds=(2, 7))
    first = make_twin(FLEET, faults)
    second = make_twin(FLEET, faults)
    reseeded = make_twin(FLEET, Faults(name="test", seed=99, arm_throttle_rate=0.2, arm_server_error_rate=0.1))
    statuses = _statuses(first)
    assert statuses == _statuses(second)
    assert statuses != _statuses(reseeded)
    assert {429, 200} <= set(statuses) and set(statuses) & {500, 503}
    injected = [r for r in first.records if r.status in (429, 500, 503)]
    assert all(2 <= int(r.headers["Retry-After"]) <= 7 for r in injected)
    metrics = first.twin.metrics()["injected_faults"]
    assert sum(metrics.values()) == len(injected)


def test_the_sdk_rides_out_chaos(make_twin):
    harness = make_twin(FLEET, "chaos")
    driver = MachineDriver(harness, "m-1")
    for _ in range(40):
        assert driver.get().name == "m-1"
    assert harness.twin.metrics()["injected_faults"]


def test_lost_run_results(make_twin):
    harness = make_twin(FLEET, Faults(lost_run_result_rate=1.0))
    driver = MachineDriver(harness, "m-1")
    name = driver.start_run("readiness", {"RequestId": "r"})
    harness.sleep(3600)
    assert driver.run_view(name).execution_state == "Running"
    (run,) = harness.twin.machine("m-1").runs
    assert run.result_lost and json.loads(run.unreported_output)["request_id"] == "r"


def test_slow_reboots(make_twin):
    harness = make_twin(FLEET, Faults(slow_reboot_rate=1.0, slow_reboot_extra_minutes=(20, 20)))
    driver = MachineDriver(harness, "m-1")
    driver.apply_changes(delay_s=0)
    harness.wait_for(lambda: driver.status() == "Disconnected", within_s=60, step_s=5)
    down = harness.wait_for(lambda: driver.status() == "Connected", within_s=3600, step_s=60)
    assert 25 * 60 <= down <= 26 * 60  # reboot_minutes 5 + 20 extra


def test_agent_flaps_are_reproducible(make_twin):
    faults = Faults(agent_flap_rate=1.0, agent_flap_minutes=(5, 5), agent_flap_window_minutes=60)

    def flap_window(harness) -> tuple[float, float]:
        driver = MachineDriver(harness, "m-2")
        start = harness.clock.now()
        harness.wait_for(lambda: driver.status() == "Disconnected", within_s=3600, step_s=60)
        went = driver.get().properties.last_status_change
        harness.wait_for(lambda: driver.status() == "Connected", within_s=3600, step_s=60)
        back = driver.get().properties.last_status_change
        return (went - start).total_seconds(), (back - went).total_seconds()

    first = flap_window(make_twin(FLEET, faults))
    assert first[0] <= 3600 and first[1] == pytest.approx(300)
    assert flap_window(make_twin(FLEET, faults)) == first


@pytest.mark.parametrize(("retry_after_s", "attempts"), [(30, 1), (7, 3)])
def test_an_activity_waits_at_most_max_sdk_wait_in_the_sdks_own_retries(make_twin, retry_after_s, attempts):
    """A throttled request is retried while the Retry-After waits fit in MAX_SDK_WAIT_S (20 s):
    a longer wait is the orchestration's, on a durable timer, not an activity's holding a worker."""
    harness = make_twin(FLEET, Faults(arm_throttle_rate=1.0, retry_after_seconds=(retry_after_s, retry_after_s)))
    driver = MachineDriver(harness, "m-1")
    started = harness.clock.now()
    with pytest.raises(HttpResponseError) as throttled:
        driver.get()
    waited = (harness.clock.now() - started).total_seconds()
    assert throttled.value.status_code == 429
    assert len([r for r in harness.records if r.status == 429]) == attempts
    assert waited == (attempts - 1) * retry_after_s <= MAX_SDK_WAIT_S
