"""geopera_kernel.worker.memory: the malloc setting a worker process applies at startup."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from geopera_kernel.worker.memory import return_large_buffers

GLIBC = platform.libc_ver()[0] == "glibc"


def _in_child(env: dict[str, str]) -> str:
    # mallopt changes the whole process: run it in a fresh one, not in the test process.
    code = "from geopera_kernel.worker.memory import return_large_buffers; print(return_large_buffers())"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return result.stdout.strip()


@pytest.mark.skipif(not GLIBC, reason="mallopt(M_MMAP_THRESHOLD) is glibc's")
def test_sets_the_threshold_under_glibc() -> None:
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    assert _in_child(env) == "True"


def test_an_explicit_environment_setting_wins() -> None:
    assert _in_child({**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}) == "False"


def test_rejects_a_non_positive_threshold() -> None:
    with pytest.raises(ValueError, match="positive"):
        return_large_buffers(0)
