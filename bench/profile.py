"""Optional py-spy sampling of a server process during one measured window
(`python -m bench.run --profile`). py-spy is not a project dependency: install
it into the venv by hand (`.venv/bin/pip install py-spy`). Output goes to
`bench/out/` (git-ignored): the collapsed stacks (`.txt`, loadable in
speedscope or flamegraph.pl) and a summary of the hottest functions."""

from __future__ import annotations

import collections
import re
import shutil
import subprocess
import sys
from pathlib import Path

OUT_DIR = Path(__file__).resolve().parent / "out"


def py_spy() -> str | None:
    beside = Path(sys.executable).parent / "py-spy"
    return str(beside) if beside.exists() else shutil.which("py-spy")


class Profiler:
    """`start()` at the beginning of the window; `finish()` waits and summarises."""

    def __init__(self, pid: int, name: str, seconds: float, rate: int = 200) -> None:
        self.pid, self.name, self.seconds, self.rate = pid, name, seconds, rate
        self.raw = OUT_DIR / f"{name}.collapsed.txt"
        self.summary = OUT_DIR / f"{name}.top.txt"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        exe = py_spy()
        if exe is None:
            print("[profile] py-spy not found: .venv/bin/pip install py-spy", flush=True)
            return
        OUT_DIR.mkdir(exist_ok=True)
        self.process = subprocess.Popen(
            [
                exe,
                "record",
                "--pid",
                str(self.pid),
                "--duration",
                str(max(1, round(self.seconds))),
                "--rate",
                str(self.rate),
                "--format",
                "raw",
                "--output",
                str(self.raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def finish(self, timeout: float = 30.0) -> Path | None:
        if self.process is None:
            return None
        try:
            _, err = self.process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            return None
        if self.process.returncode != 0 or not self.raw.exists():
            print(f"[profile] py-spy failed: {err.decode(errors='replace')[-500:]}", flush=True)
            return None
        self.summary.write_text(summarise(self.raw.read_text()))
        print(f"[profile] {self.summary}", flush=True)
        return self.summary


_FRAME = re.compile(r"^(?P<fn>.*) \((?P<path>.*?):\d+\)$")


def _frame_name(frame: str) -> str:
    match = _FRAME.match(frame)
    if not match:
        return frame
    path = match["path"]
    for marker, replacement in (("/site-packages/", ""), ("/src/", ""), ("/lib/python3", "stdlib/python3")):
        if marker in path:
            path = replacement + path.split(marker, 1)[1]
    return f"{match['fn']} ({path})"


def summarise(collapsed: str, top: int = 40) -> str:
    """Self and inclusive shares of the samples, per function (line numbers merged)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = [_frame_name(f) for f in stack.split(";")]
        total += int(count)
        own[frames[-1]] += int(count)
        for name in set(frames):
            inclusive[name] += int(count)
    if not total:
        return "no samples\n"
    lines = [f"{total} samples (all threads; C code shows as its calling Python frame)", "", "self:"]
    lines += [f"{n / total:6.1%}  {name}" for name, n in own.most_common(top)]
    lines += ["", "inclusive:"]
    lines += [f"{n / total:6.1%}  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines) + "\n"
