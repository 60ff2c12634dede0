"""Fixtures shared by the workflow and end-to-end suites (see tests/rig.py)."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import pytest

from tests.rig import RigFor, Rigs, ServeFleet


@pytest.fixture
def rigs(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rigs]:
    opened = Rigs(monkeypatch)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def rig_for(rigs: Rigs) -> RigFor:
    """``rig_for({"name": {attributes}, ...}, faults=None, seed=1)`` → a running Rig with one machine per entry."""
    return partial(rigs.open, serve=False)


@pytest.fixture
def serve_fleet(rigs: Rigs) -> ServeFleet:
    """``serve_fleet({"name": {attributes}, ...}, subscriptions=1, seed=7, **policy)`` → a running ``Served``
    (reboot policy ``auto`` unless overridden, as app settings)."""
    return partial(rigs.open, serve=True, seed=7, activity_workers=8)  # type: ignore[return-value]
