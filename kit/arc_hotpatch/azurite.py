"""Azurite's table service for local runs: the audit ledger's storage in ``simulate``, ``serve`` and the tests.

``./dev`` installs Azurite (npm package ``azurite``, pinned) into ``.azurite/`` at the repository root;
``azurite_table()`` starts ``azurite-table`` on a free loopback port, in memory, waits until it accepts
connections, yields its connection string (the well-known development account ``devstoreaccount1``) and stops
the process it started, by its pid. ``ledger_environment()`` does that only when no ledger is configured
(``HOTPATCH_LEDGER_CONNECTION`` / ``HOTPATCH_LEDGER_ENDPOINT``) and sets ``HOTPATCH_LEDGER_CONNECTION`` for
the app while it runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from core.ledger import CONNECTION_SETTING, ENDPOINT_SETTING

REPO = Path(__file__).resolve().parents[2]
AZURITE_DIR = REPO / ".azurite"  # ./dev: npm install --prefix .azurite azurite@<AZURITE_VERSION>
AZURITE_VERSION = "3.35.0"  # the newest that runs on Node.js 20 (3.36+ need Node.js 21+); keep ./dev in step
AZURITE_BIN_ENV = "HOTPATCH_AZURITE_BIN"  # another azurite-table executable, if wanted

ACCOUNT = "devstoreaccount1"
# Azurite's documented development account key (public: it works only against a local emulator).
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
START_TIMEOUT_S = 30.0


class AzuriteError(RuntimeError):
    """Azurite is not installed or did not start; the message says what to do."""


def connection_string(port: int, host: str = "127.0.0.1") -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"TableEndpoint=http://{host}:{port}/{ACCOUNT};")


def azurite_table_executable() -> str:
    """The ``azurite-table`` to run: ``HOTPATCH_AZURITE_BIN``, ./dev's install, or one on PATH."""
    configured = os.environ.get(AZURITE_BIN_ENV)
    if configured:
        if not Path(configured).is_file():
            raise AzuriteError(f"{AZURITE_BIN_ENV}={configured}: no such file")
        return configured
    local = AZURITE_DIR / "node_modules" / ".bin" / "azurite-table"
    if local.is_file():
        return str(local)
    found = shutil.which("azurite-table")
    if found:
        return found
    if shutil.which("npm"):
        install_azurite()
        if local.is_file():
            return str(local)
    raise AzuriteError(
        f"Azurite is not installed: run ./dev (it installs azurite@{AZURITE_VERSION} into {AZURITE_DIR}), or "
        f"npm install --prefix .azurite azurite@{AZURITE_VERSION}; the audit ledger needs its table service "
        f"(or set {CONNECTION_SETTING} / {ENDPOINT_SETTING} to a real storage account)")


def install_azurite() -> None:
    """``npm install --prefix .azurite azurite@<pinned>`` (what ./dev does on first use)."""
    result = subprocess.run(
        ["npm", "install", "--prefix", str(AZURITE_DIR), "--no-audit", "--no-fund", "--save-exact",
         f"azurite@{AZURITE_VERSION}"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600, check=False,
    )
    if result.returncode != 0:
        raise AzuriteError(f"npm could not install azurite@{AZURITE_VERSION} (run ./dev): {result.stderr[-1500:]}")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the process we started (its own process group: node and nothing else), by pid."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


class AzuriteTable:
    """A running ``azurite-table``: ``port``, ``connection_string``, ``pid``, ``started_in_s``; ``stop()``."""

    def __init__(self, *, port: int = 0, timeout_s: float = START_TIMEOUT_S) -> None:
        executable = azurite_table_executable()
        self._workspace = tempfile.TemporaryDirectory(prefix="azurite-")
        self._log = open(Path(self._workspace.name) / "azurite.log", "wb")  # noqa: SIM115 (closed in stop)
        started = time.perf_counter()
        for _ in range(5):  # a free port can be taken between the probe and Azurite's bind: try another
            self.port = port or _free_port()
            self.process = subprocess.Popen(
                [*self._launcher(executable), "--tableHost", "127.0.0.1", "--tablePort", str(self.port),
                 "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--silent", "--disableTelemetry"],
                stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
                cwd=self._workspace.name,
            )
            if self._wait_until_up(timeout_s):
                break
            _stop(self.process)
            if port:
                break
        else:
            self._fail(f"Azurite did not start on a free port ({executable})")
        if self.process.poll() is not None or not _accepts(self.port):
            self._fail(f"Azurite ({executable}) did not accept connections on 127.0.0.1:{self.port}")
        self.started_in_s = time.perf_counter() - started
        self.connection_string = connection_string(self.port)

    def _launcher(self, executable: str) -> list[str]:
        """``node -r <watchdog> azurite-table``: Azurite exits when the process that started it is gone (even
        killed, when no ``stop`` runs), so no Azurite outlives its run; the executable alone without node."""
        node = shutil.which("node")
        if not node:
            return [executable]
        watchdog = Path(self._workspace.name) / "exit-with-parent.js"
        watchdog.write_text("const parent = process.ppid;\n"
                            "setInterval(() => { if (process.ppid !== parent) process.exit(0); }, 500).unref();\n")
        return [node, "-r", str(watchdog), executable]

    @property
    def pid(self) -> int:
        return self.process.pid

    def _wait_until_up(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False  # exited: e.g. the port was taken
            if _accepts(self.port):
                return True
            time.sleep(0.02)
        return False

    def _fail(self, message: str) -> None:
        if self.process.poll() is None:
            _stop(self.process)
        log_text = ""
        with contextlib.suppress(OSError):
            log_text = (Path(self._workspace.name) / "azurite.log").read_text(errors="replace")[-2000:]
        self.stop()
        raise AzuriteError(f"{message}: {log_text.strip() or 'no output'}")

    def stop(self) -> None:
        if getattr(self, "process", None) is not None:
            _stop(self.process)
        self._log.close()
        with contextlib.suppress(OSError):
            self._workspace.cleanup()

    def __enter__(self) -> AzuriteTable:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def azurite_table(*, port: int = 0) -> Iterator[AzuriteTable]:
    """Azurite's table service on a free loopback port for the duration; stopped by its pid."""
    azurite = AzuriteTable(port=port)
    try:
        yield azurite
    finally:
        azurite.stop()


def ledger_configured() -> bool:
    return bool(os.environ.get(CONNECTION_SETTING) or os.environ.get(ENDPOINT_SETTING))


@contextlib.contextmanager
def ledger_environment() -> Iterator[str | None]:
    """The ledger for a local run: the configured one, else an Azurite started here (and
    ``HOTPATCH_LEDGER_CONNECTION`` set to it for the duration). Yields the connection string it set, or None."""
    if ledger_configured():
        yield None
        return
    from activities.ledger_calls import close_ledger_clients

    with azurite_table() as azurite:
        saved = os.environ.get(CONNECTION_SETTING)
        os.environ[CONNECTION_SETTING] = azurite.connection_string
        try:
            yield azurite.connection_string
        finally:
            close_ledger_clients()
            if saved is None:
                os.environ.pop(CONNECTION_SETTING, None)
            else:
                os.environ[CONNECTION_SETTING] = saved
