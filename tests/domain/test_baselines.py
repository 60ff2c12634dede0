from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.baselines import BaselineDataError, baseline_flag, load_baselines


def test_shipped_baseline_is_the_october_2025_one() -> None:
    (baseline,) = load_baselines()
    assert (baseline.build, baseline.revision, baseline.kb) == (26100, 6899, "KB5066835")


@pytest.mark.parametrize(
    ("build", "revision", "hotfixes", "flag"),
    [
        (26100, 6899, [], "on"),
        (26100, 6905, ["KB5070893"], "on"),  # WSUS release keeps it eligible
        (26100, 6905, ["KB5070881"], "off"),  # out-of-band release does not
        (26100, 6905, [], "unknown"),  # two updates share the build: KBs decide
        (26100, 4000, [], "off"),
        (26100, 32230, [], "unknown"),  # newer than every known baseline
        (20348, 2700, [], "unknown"),
        (None, None, [], "unknown"),
    ],
)
def test_baseline_flag(build: int | None, revision: int | None, hotfixes: list[str], flag: str) -> None:
    assert baseline_flag(build, revision, hotfixes, load_baselines()) == flag


def test_a_newer_baseline_is_added_without_code(tmp_path: Path) -> None:
    extra = tmp_path / "baselines.json"
    extra.write_text(json.dumps({"baselines": [
        {"build": 26100, "revision": 32230, "kb": "KB5073379", "released": "2026-01-13"}]}))
    baselines = load_baselines(str(extra))
    assert baseline_flag(26100, 32230, [], baselines) == "on"
    assert baseline_flag(26100, 6899, [], baselines) == "off"


def test_bad_baselines_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"baselines": [{"build": 26100}]}))
    with pytest.raises(BaselineDataError, match=r"bad.json: baselines\[0\]"):
        load_baselines(str(bad))
