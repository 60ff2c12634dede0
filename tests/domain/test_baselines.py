from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest

from core.baselines import BaselineDataError, baseline_flag, load_baselines, relevant_kbs, standing

OCT_2025 = date(2025, 11, 20)  # after the October 2025 baseline, before January 2026's
FEB_2026 = date(2026, 2, 2)
MAY_2026 = date(2026, 5, 4)


def test_shipped_baselines_each_name_their_source() -> None:
    shipped = json.loads((Path(__file__).parents[2] / "core" / "baselines.json").read_text())
    for entry in shipped["baselines"]:
        assert entry["source"].strip(), entry
        for update in entry.get("same_build_updates", []):
            assert update["source"].strip(), update
    assert shipped["licensing_issue"]["source"].strip()
    kbs = [(b.revision, b.kb, b.released) for b in load_baselines()]
    assert kbs == [(6899, "KB5066835", "2025-10-14"), (32230, "KB5073379", "2026-01-13"),
                   (32698, "KB5091157", "2026-04-19")]


@pytest.mark.parametrize(
    ("build", "revision", "hotfixes", "today", "flag"),
    [
        (26100, 6899, [], OCT_2025, "on"),
        (26100, 6905, ["KB5070893"], OCT_2025, "on"),  # WSUS release keeps it eligible
        (26100, 6905, ["KB5070881"], OCT_2025, "off"),  # the out-of-band release takes it off the path
        (26100, 6905, [], OCT_2025, "unknown"),  # two updates share the revision: KBs decide
        (26100, 4000, [], OCT_2025, "off"),
        (26100, 32230, [], OCT_2025, "unknown"),  # not released yet on that day
        (26100, 32230, ["KB5073379"], FEB_2026, "on"),  # January 2026's baseline
        (26100, 6899, [], FEB_2026, "off"),  # October 2025's is no longer the latest
        (26100, 32230, [], MAY_2026, "off"),
        (26100, 32698, [], MAY_2026, "on"),  # April 2026's out-of-band cumulative update
        (26100, 40000, [], MAY_2026, "unknown"),  # newer than every known baseline
        (20348, 2700, [], MAY_2026, "unknown"),
        (None, None, [], MAY_2026, "unknown"),
    ],
)
def test_baseline_flag_against_the_baselines_released_by_the_day(
    build: int | None, revision: int | None, hotfixes: list[str], today: date, flag: str,
) -> None:
    assert baseline_flag(build, revision, hotfixes, load_baselines(), today) == flag


def test_standing_says_why_in_the_datas_words() -> None:
    data = load_baselines()
    assert "KB5070881" in standing(26100, 6905, ["KB5070881"], data, OCT_2025).detail
    assert "not the latest baseline 26100.32230 (KB5073379, 2026-01-13)" in standing(26100, 6899, [], data,
                                                                                      FEB_2026).detail


def test_a_newer_baseline_and_a_hotpatch_are_added_without_code(tmp_path: Path) -> None:
    extra = tmp_path / "baselines.json"
    extra.write_text(json.dumps({"baselines": [
        {"build": 26100, "revision": 33000, "kb": "KB5099999", "released": "2026-07-14",
         "hotpatches": [{"revision": 33100, "kb": "KB5099998", "released": "2026-08-11"}]}]}))
    data = load_baselines(str(extra))
    assert baseline_flag(26100, 33000, [], data, date(2026, 8, 1)) == "on"
    assert baseline_flag(26100, 33100, [], data, date(2026, 8, 20)) == "on"  # a hotpatch of it
    assert baseline_flag(26100, 32698, [], data, date(2026, 8, 1)) == "off"


def test_the_licensing_issues_range_is_data_an_operator_can_set(tmp_path: Path) -> None:
    shipped = load_baselines().licensing_issue
    assert (shipped.from_revision, shipped.fixed_in_revision) == (6899, None)
    assert shipped.affects(6899) and shipped.affects(32230) and not shipped.affects(6584)
    extra = tmp_path / "fixed.json"
    extra.write_text(json.dumps({"licensing_issue": {"from_revision": 6899, "fixed_in_revision": 32230}}))
    fixed = load_baselines(str(extra)).licensing_issue
    assert fixed.affects(6899) and not fixed.affects(32230)


def test_an_extra_entry_overrides_the_shipped_one_of_its_revision(tmp_path: Path) -> None:
    extra = tmp_path / "override.json"
    extra.write_text(json.dumps({"baselines": [
        {"build": 26100, "revision": 32230, "kb": "KB5073379", "released": "2026-01-20"}]}))
    entries = [b for b in load_baselines(str(extra)) if b.revision == 32230]
    assert [b.released for b in entries] == ["2026-01-20"]


def test_the_readiness_script_is_told_the_kbs_that_decide() -> None:
    assert {"KB5066835", "KB5070893", "KB5070881", "KB5073379", "KB5091157"} <= set(relevant_kbs(load_baselines()))


@pytest.mark.parametrize(
    ("content", "named"),
    [
        ({"baselines": [{"build": 26100}]}, r"bad.json: baselines\[0\]"),
        ({"baselines": [{"build": 26100, "revision": 1, "kb": "KB1", "released": "January"}]}, r"'released'"),
        ({"licensing_issue": {"fixed_in_revision": 5}}, r"bad.json: licensing_issue"),
    ],
)
def test_bad_baselines_file_is_named(tmp_path: Path, content: dict, named: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(content))
    with pytest.raises(BaselineDataError, match=named):
        load_baselines(str(bad))
