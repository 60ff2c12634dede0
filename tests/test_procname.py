"""The rehearsal kit names its helper processes (``arc_hotpatch.procname``) so ps, top and the benchmark tell
them apart."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from arc_hotpatch.procname import name_this_process

REPO = Path(__file__).resolve().parents[1]


def test_a_process_takes_the_name_it_gives_itself() -> None:
    code = ("import sys; sys.path[:0] = ['kit']; from arc_hotpatch.procname import name_this_process; "
            "print(name_this_process('arc-test-name')); print(open('/proc/self/comm').read().strip())")
    lines = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                           check=True).stdout.split()
    assert lines == ["True", "arc-test-name"]


@pytest.mark.parametrize("name", ["", "a-name-of-sixteen"])
def test_a_name_must_fit_the_kernels_fifteen_bytes(name: str) -> None:
    with pytest.raises(ValueError, match="1 to 15 bytes"):
        name_this_process(name)
