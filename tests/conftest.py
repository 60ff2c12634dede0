"""Fixtures shared by the workflow and end-to-end suites (see tests/rig.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from arc_hotpatch.azurite import AzuriteTable, azurite_table
from tests.rig import RigFor, Rigs, ServeFleet

TESTS = Path(__file__).resolve().parent


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


# --- the audit ledger: Azurite's table service, one per test session ----------------------------------

LEDGER_SUITES = {"workflow", "e2e", "ledger"}  # suites that run the app: their tests get the session's Azurite


@pytest.fixture(scope="session")
def azurite() -> Iterator[AzuriteTable]:
    """Azurite's table service (``./dev`` installs it) on a free loopback port, started once per session and
    stopped by its pid at the end."""
    with azurite_table() as running:
        yield running


@pytest.fixture
def ledger(azurite: AzuriteTable, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest) -> Iterator[str]:
    """The app's ledger settings pointed at the session's Azurite, with a table of this test's own; yields the
    table name. Clients are closed at the end."""
    from activities.ledger_calls import close_ledger_clients
    from core.ledger import CONNECTION_SETTING, ENDPOINT_SETTING, TABLE_SETTING

    table = "ledger" + hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:20]
    monkeypatch.delenv(ENDPOINT_SETTING, raising=False)
    monkeypatch.setenv(CONNECTION_SETTING, azurite.connection_string)
    monkeypatch.setenv(TABLE_SETTING, table)
    try:
        yield table
    finally:
        close_ledger_clients()


@pytest.fixture(autouse=True)
def _ledger_for_app_suites(request: pytest.FixtureRequest) -> None:
    """Tests of the suites that run the app (simulations, served rollouts) write their ledger to the session's
    Azurite instead of each run starting its own."""
    suite = request.node.path.relative_to(TESTS).parts[0] if request.node.path.is_relative_to(TESTS) else ""
    if suite in LEDGER_SUITES and "ledger" not in request.fixturenames:
        request.getfixturevalue("ledger")
