"""The twin's HTTPS: a certificate authority made once per process (trustme) and a certificate it issues for
127.0.0.1 and localhost, so any ARM client (they all send bearer tokens, and azure-core sends them only over TLS)
can call the twin with ``connection_verify=<the CA file>`` and curl with ``--cacert``.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import ssl
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import trustme

LOOPBACK_NAMES = ("127.0.0.1", "localhost")


class CaFileError(ValueError):
    """The CA certificate cannot be written where asked; names the path."""


@dataclass(frozen=True)
class TwinTls:
    """The server side (``context``) and what clients need to trust it (``ca_file``, PEM)."""

    ca_file: Path
    context: ssl.SSLContext


_lock = threading.Lock()
_authority: tuple[trustme.CA, trustme.LeafCert] | None = None


def _process_authority() -> tuple[trustme.CA, trustme.LeafCert]:
    global _authority
    with _lock:
        if _authority is None:
            ca = trustme.CA(organization_name="Arc Hotpatch fleet twin")
            _authority = ca, ca.issue_cert(*LOOPBACK_NAMES)
        return _authority


def default_ca_file() -> Path:
    """Where the CA certificate goes without ``--ca-file``: the temp folder, one file per process (removed when
    the process exits)."""
    return Path(tempfile.gettempdir()) / f"arc-hotpatch-twin-ca-{os.getpid()}.pem"


_removed_at_exit: set[Path] = set()


def _remove_at_exit(path: Path) -> None:
    """The default CA file is this process's own: without this, every simulate, serve and test run would leave
    one file in the temp folder. A ``--ca-file`` the operator named stays."""
    with _lock:
        if path in _removed_at_exit:
            return
        _removed_at_exit.add(path)
    atexit.register(_unlink, path)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def twin_tls(ca_file: str | Path | None = None) -> TwinTls:
    """The process's twin certificate, its CA written to ``ca_file`` (default ``default_ca_file()``)."""
    ca, leaf = _process_authority()
    path = Path(ca_file) if ca_file else default_ca_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        ca.cert_pem.write_to_path(str(path))
    except OSError as exc:
        raise CaFileError(f"--ca-file {path}: cannot write the twin's CA certificate there ({exc.strerror or exc})") \
            from None
    if not ca_file:
        _remove_at_exit(path)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(context)
    return TwinTls(path, context)
