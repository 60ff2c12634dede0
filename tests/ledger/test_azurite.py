"""Azurite for local runs: ``simulate`` / ``serve`` start their own unless a ledger is configured, stop it by pid."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from activities.ledger_calls import read_entries, write_entry
from arc_hotpatch import azurite as azurite_module
from arc_hotpatch.azurite import AZURITE_VERSION, AzuriteError, ledger_environment
from core.ledger import CONNECTION_SETTING, ENDPOINT_SETTING, LedgerEntry

ROOT = Path(__file__).resolve().parents[2]
MACHINE = ("/subscriptions/00000000-0000-0000-0000-000000000001/resourceGroups/rg-a/providers/"
           "Microsoft.HybridCompute/machines/web-01")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0] != "Z"  # not a zombie


def test_a_local_run_starts_and_stops_its_own_azurite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(CONNECTION_SETTING, raising=False)
    monkeypatch.delenv(ENDPOINT_SETTING, raising=False)
    started: list[int] = []
    real = azurite_module.AzuriteTable

    def tracked(**kwargs: object) -> azurite_module.AzuriteTable:
        table = real(**kwargs)  # type: ignore[arg-type]
        started.append(table.pid)
        return table

    monkeypatch.setattr(azurite_module, "AzuriteTable", tracked)
    with ledger_environment() as connection:
        assert connection and os.environ[CONNECTION_SETTING] == connection
        assert "TableEndpoint=http://127.0.0.1:" in connection
        entry = LedgerEntry.of(MACHINE, "r", "i", "reboot", "requested", "2026-01-05T08:00:00Z")
        write_entry(entry)
        assert read_entries(MACHINE) == [entry]
        (pid,) = started
        assert alive(pid)
    assert CONNECTION_SETTING not in os.environ, "the setting is undone"
    assert not alive(pid), "stopped by its pid"


def test_a_configured_ledger_is_used_as_it_is(ledger: str) -> None:
    configured = os.environ[CONNECTION_SETTING]
    with ledger_environment() as connection:
        assert connection is None and os.environ[CONNECTION_SETTING] == configured


def test_a_missing_azurite_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(azurite_module.AZURITE_BIN_ENV, str(tmp_path / "nothing-here"))
    with pytest.raises(AzuriteError, match="no such file"):
        azurite_module.azurite_table_executable()
    monkeypatch.delenv(azurite_module.AZURITE_BIN_ENV)
    monkeypatch.setattr(azurite_module, "AZURITE_DIR", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path))  # neither azurite-table nor npm
    with pytest.raises(AzuriteError, match=r"run \./dev"):
        azurite_module.azurite_table_executable()


def test_dev_installs_the_pinned_azurite() -> None:
    dev = (ROOT / "dev").read_text()
    assert re.search(r"^AZURITE_VERSION=(\S+)$", dev, re.MULTILINE).group(1) == AZURITE_VERSION  # type: ignore[union-attr]
    assert dev.count("ensure_azurite") >= 2, "./dev installs Azurite before any command"
    assert "/.azurite" in (ROOT / ".gitignore").read_text().split()  # ignored as a directory or a symlink
    assert ".azurite" in (ROOT / ".funcignore").read_text().split()
