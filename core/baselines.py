"""Known Hotpatch baselines (data, extensible without code) and the report's ``baseline`` flag."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from .vocabulary import BaselineFlag


class BaselineDataError(ValueError):
    """A baselines file that is malformed; the message names the file and the entry."""


@dataclass(frozen=True)
class SameBuildUpdate:
    revision: int
    kb: str
    eligible: bool


@dataclass(frozen=True)
class Baseline:
    build: int
    revision: int
    kb: str
    released: str
    same_build_updates: tuple[SameBuildUpdate, ...] = ()


def _parse(data: Any, origin: str) -> list[Baseline]:
    if not isinstance(data, dict) or not isinstance(data.get("baselines"), list):
        raise BaselineDataError(f"{origin}: expected an object with a 'baselines' list")
    parsed: list[Baseline] = []
    for index, entry in enumerate(data["baselines"]):
        where = f"{origin}: baselines[{index}]"
        try:
            updates = tuple(
                SameBuildUpdate(int(u["revision"]), str(u["kb"]), bool(u["eligible"]))
                for u in entry.get("same_build_updates", [])
            )
            parsed.append(
                Baseline(int(entry["build"]), int(entry["revision"]), str(entry["kb"]), str(entry["released"]),
                         updates)
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise BaselineDataError(f"{where}: needs build, revision, kb, released ({exc!r})") from None
    return parsed


@lru_cache(maxsize=8)
def load_baselines(extra_file: str = "") -> tuple[Baseline, ...]:
    """The shipped baselines plus those of ``extra_file`` (HOTPATCH_BASELINES_FILE), if given."""
    shipped = json.loads(resources.files(__package__).joinpath("baselines.json").read_text("utf-8"))
    baselines = _parse(shipped, "baselines.json")
    if extra_file:
        path = Path(extra_file)
        try:
            extra = json.loads(path.read_text("utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise BaselineDataError(f"{extra_file}: cannot read baselines ({exc})") from None
        baselines += _parse(extra, extra_file)
    return tuple(sorted(baselines, key=lambda b: (b.build, b.revision)))


def baseline_flag(
    build: int | None, revision: int | None, hotfixes: Iterable[str] | None, baselines: Sequence[Baseline]
) -> BaselineFlag:
    """``on`` when the machine runs the latest known baseline of its build, ``off`` when it runs
    another (older) revision, ``unknown`` when we cannot tell (no baseline for the build, a revision
    newer than every known baseline, or a shared build number without KB evidence)."""
    if build is None or revision is None:
        return BaselineFlag.UNKNOWN
    known = [b for b in baselines if b.build == build]
    if not known:
        return BaselineFlag.UNKNOWN
    latest = known[-1]
    if revision == latest.revision:
        return BaselineFlag.ON
    same_build = [u for u in latest.same_build_updates if u.revision == revision]
    if same_build:
        installed = {kb.upper() for kb in hotfixes or ()}
        if any(u.kb.upper() in installed and not u.eligible for u in same_build):
            return BaselineFlag.OFF
        if any(u.kb.upper() in installed and u.eligible for u in same_build):
            return BaselineFlag.ON
        return BaselineFlag.UNKNOWN
    return BaselineFlag.OFF if revision < latest.revision else BaselineFlag.UNKNOWN
