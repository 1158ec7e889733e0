"""`geopera worker` passes every flag to the worker program, as README shows it
(`geopera worker --server HOST:PORT ...`): the first one may be an option."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

GEOPERA = Path(sys.executable).parent / "geopera"


def test_the_worker_command_takes_the_workers_own_flags_first() -> None:
    done = subprocess.run(
        [GEOPERA, "worker", "--server", "127.0.0.1:1", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "unrecognized arguments" not in done.stderr
    assert "--no-shared-storage" in done.stdout and "--capacity" in done.stdout  # the worker's help


def test_a_worker_without_a_token_says_so_and_exits_2() -> None:
    env = {name: value for name, value in os.environ.items() if name != "GEOPERA_WORKER_TOKEN"}
    done = subprocess.run(
        [GEOPERA, "worker", "--server", "127.0.0.1:1"], capture_output=True, text=True, timeout=60, env=env
    )
    assert done.returncode != 0
    assert "unrecognized arguments" not in done.stderr
    assert "token" in done.stderr.lower()
