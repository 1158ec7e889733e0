"""Running a program with its stderr on a terminal (a fresh pty) and reading what it drew
there: the SDK's progress bars draw only on a terminal."""

from __future__ import annotations

import os
import pty
import re
import select
import subprocess
from pathlib import Path


def run_on_terminal(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[int, str, str]:
    """Runs `argv` with stderr on a pty: its exit status, stdout and what it drew on the terminal."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=follower, env=env,
                               cwd=cwd)  # fmt: skip
    os.close(follower)
    output = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # EIO: the terminal closed
            break
        if not chunk:
            break
        output += chunk
    os.close(leader)
    stdout, _ = process.communicate(timeout=30)
    return process.returncode, stdout.decode(), output.decode()


def bar_percents(text: str) -> list[int]:
    """The percentages a progress bar drew, in order."""
    return [int(p) for p in re.findall(r"(\d+)%", text)]
