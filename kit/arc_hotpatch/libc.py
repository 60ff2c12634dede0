"""The C library's functions that the rehearsal kit calls through ctypes (glibc's ``malloc_trim``, Linux's ``prctl``).
One loader: a C library without the function (musl, macOS) gives None, and the caller does without."""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable
from typing import Any


def libc_function(name: str) -> Callable[..., Any] | None:
    """The C library's function ``name``, or None where there is no such library or function."""
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    try:
        return getattr(ctypes.CDLL(library, use_errno=True), name, None)
    except OSError:
        return None
