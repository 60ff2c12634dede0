"""Known Hotpatch baselines (data, extensible without code): the report's ``baseline`` flag, where a build stands
against the latest baseline on a given day, and the October 2025 licensing issue's affected range.

The data lives in ``baselines.json`` (each entry with its source); a user's file (``HOTPATCH_BASELINES_FILE``)
adds entries or overrides them (same build and revision), and may set the licensing issue's range (e.g. a
``fixed_in_revision`` once Microsoft names one). Only activities read it: orchestrators get the answers.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .vocabulary import BaselineFlag


class BaselineDataError(ValueError):
    """A baselines file that is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class SameBuildUpdate:
    """An update that shares its baseline's build revision: the installed KB, not the build, tells them apart."""

    revision: int
    kb: str
    eligible: bool
    note: str = ""


@dataclass(frozen=True)
class Hotpatch:
    """A hotpatch of a baseline (its own revision, installed without a reboot)."""

    revision: int
    kb: str
    released: str


@dataclass(frozen=True)
class Baseline:
    build: int
    revision: int
    kb: str
    released: str
    same_build_updates: tuple[SameBuildUpdate, ...] = ()
    hotpatches: tuple[Hotpatch, ...] = ()

    @property
    def label(self) -> str:
        return f"{self.build}.{self.revision} ({self.kb}, {self.released})"


@dataclass(frozen=True)
class LicensingIssue:
    """The October 2025 feature licensing issue: revisions from ``from_revision`` up to (not including)
    ``fixed_in_revision`` (None: no fix known) can lose the Hotpatch feature license without the workaround."""

    from_revision: int
    fixed_in_revision: int | None = None

    def affects(self, revision: int) -> bool:
        return revision >= self.from_revision and (self.fixed_in_revision is None or revision < self.fixed_in_revision)


@dataclass(frozen=True)
class BaselineData:
    baselines: tuple[Baseline, ...]
    licensing_issue: LicensingIssue

    def __iter__(self) -> Any:  # the baselines, oldest first
        return iter(self.baselines)


@dataclass(frozen=True)
class Standing:
    """Where a machine's build stands on a day: the report's flag, and why."""

    flag: BaselineFlag
    detail: str


def _date(text: Any, where: str) -> str:
    try:
        return date.fromisoformat(str(text)).isoformat()
    except ValueError:
        raise BaselineDataError(f"{where}: 'released' must be a date such as 2026-01-13, got {text!r}") from None


def _parse_baseline(entry: Any, where: str) -> Baseline:
    try:
        updates = tuple(
            SameBuildUpdate(int(u["revision"]), str(u["kb"]), bool(u["eligible"]), str(u.get("note", "")))
            for u in entry.get("same_build_updates", [])
        )
        hotpatches = tuple(Hotpatch(int(h["revision"]), str(h["kb"]), _date(h["released"], f"{where}.hotpatches"))
                           for h in entry.get("hotpatches", []))
        return Baseline(int(entry["build"]), int(entry["revision"]), str(entry["kb"]),
                        _date(entry["released"], where), updates, hotpatches)
    except BaselineDataError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BaselineDataError(f"{where}: needs build, revision, kb, released ({exc!r})") from None


def _parse_licensing(data: Any, where: str) -> LicensingIssue:
    try:
        fixed = data.get("fixed_in_revision")
        return LicensingIssue(int(data["from_revision"]), None if fixed is None else int(fixed))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BaselineDataError(f"{where}: needs from_revision and fixed_in_revision (a revision or null) "
                                f"({exc!r})") from None


def _parse(data: Any, origin: str) -> tuple[list[Baseline], LicensingIssue | None]:
    if not isinstance(data, dict) or not isinstance(data.get("baselines", []), list):
        raise BaselineDataError(f"{origin}: expected an object with a 'baselines' list")
    baselines = [_parse_baseline(entry, f"{origin}: baselines[{index}]")
                 for index, entry in enumerate(data.get("baselines", []))]
    licensing = data.get("licensing_issue")
    return baselines, None if licensing is None else _parse_licensing(licensing, f"{origin}: licensing_issue")


@lru_cache(maxsize=8)
def load_baselines(extra_file: str = "") -> BaselineData:
    """The shipped data plus that of ``extra_file`` (HOTPATCH_BASELINES_FILE), which adds or overrides."""
    shipped = json.loads(resources.files(__package__).joinpath("baselines.json").read_text("utf-8"))
    baselines, licensing = _parse(shipped, "baselines.json")
    assert licensing is not None, "the shipped baselines.json names the licensing issue's range"
    if extra_file:
        path = Path(extra_file)
        try:
            extra = json.loads(path.read_text("utf-8"))
        except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON
            raise BaselineDataError(f"{extra_file}: cannot read baselines ({str(exc)[:200]})") from None
        added, extra_licensing = _parse(extra, extra_file)
        replaced = {(b.build, b.revision) for b in added}
        baselines = [b for b in baselines if (b.build, b.revision) not in replaced] + added
        licensing = extra_licensing or licensing
    return BaselineData(tuple(sorted(baselines, key=lambda b: (b.build, b.revision))), licensing)


def standing(
    build: int | None, revision: int | None, hotfixes: Iterable[str] | None, data: BaselineData | Iterable[Baseline],
    today: date | None = None,
) -> Standing:
    """``on`` when the machine runs the latest baseline of its build released by ``today`` (or a hotpatch of
    it, or a same-build update that keeps it eligible), ``off`` when it runs an older revision or a same-build
    update off the hotpatch path, ``unknown`` when we cannot tell (no baseline for the build, a revision newer
    than every known one, or a shared revision without KB evidence)."""
    if build is None or revision is None:
        return Standing(BaselineFlag.UNKNOWN, "the build is not known")
    known = [b for b in data if b.build == build and (today is None or date.fromisoformat(b.released) <= today)]
    if not known:
        return Standing(BaselineFlag.UNKNOWN, f"no Hotpatch baseline is known for build {build}")
    latest = known[-1]
    if revision == latest.revision:
        return Standing(BaselineFlag.ON, f"on the latest baseline {latest.label}")
    if any(h.revision == revision for h in latest.hotpatches):
        return Standing(BaselineFlag.ON, f"on a hotpatch of the latest baseline {latest.label}")
    same_build = [u for u in latest.same_build_updates if u.revision == revision]
    if same_build:
        installed = {kb.upper() for kb in hotfixes or ()}
        for update in same_build:
            if update.kb.upper() in installed and not update.eligible:
                return Standing(BaselineFlag.OFF, f"{update.kb} on {build}.{revision}: {update.note or 'off the path'}")
        for update in same_build:
            if update.kb.upper() in installed:
                return Standing(BaselineFlag.ON, f"{update.kb} keeps {build}.{revision} on the baseline {latest.label}")
        kbs = " or ".join(u.kb for u in same_build)
        return Standing(BaselineFlag.UNKNOWN, f"{build}.{revision} is shared by {kbs}: the installed KB decides")
    if revision < latest.revision:
        return Standing(BaselineFlag.OFF, f"{build}.{revision} is not the latest baseline {latest.label}")
    return Standing(BaselineFlag.UNKNOWN, f"{build}.{revision} is newer than every known baseline "
                                          f"(latest {latest.label}): add it to the baselines data")


def baseline_flag(
    build: int | None, revision: int | None, hotfixes: Iterable[str] | None, data: BaselineData | Iterable[Baseline],
    today: date | None = None,
) -> BaselineFlag:
    """The report's ``baseline`` flag (see ``standing``)."""
    return standing(build, revision, hotfixes, data, today).flag


def relevant_kbs(data: BaselineData) -> list[str]:
    """The KBs whose presence the readiness script reports: those that tell same-build updates apart."""
    return sorted({u.kb.upper() for b in data for u in b.same_build_updates} | {b.kb.upper() for b in data})
