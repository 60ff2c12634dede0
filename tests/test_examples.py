"""The example files the README points operators at stay valid."""

from __future__ import annotations

from pathlib import Path

from arc_hotpatch.twin.faults import load_faults
from arc_hotpatch.twin.fleet import load_scenario

EXAMPLES = Path(__file__).parents[1] / "examples"


def test_example_scenario_and_faults_load() -> None:
    fleet = load_scenario(EXAMPLES / "scenario.json")
    assert len(fleet.machines) == 39 and len(fleet.subscription_ids) == 2
    faults = load_faults(str(EXAMPLES / "faults.json"))
    assert faults.arm_throttle_rate == 0.05 and faults.slow_reboot_extra_minutes == (5, 15)
