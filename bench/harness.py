"""Runs one load point (`bench.load` in a child process) and samples the CPU
time of the processes involved over exactly its measured window."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

REPO = Path(__file__).resolve().parents[1]
_CLK_TCK = os.sysconf("SC_CLK_TCK")

PidSource = Callable[[], list[int]]


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of one process, None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def _sample(groups: dict[str, list[int]]) -> dict[str, dict[int, float]]:
    out: dict[str, dict[int, float]] = {}
    for name, pids in groups.items():
        out[name] = {pid: cpu for pid in pids if (cpu := cpu_seconds(pid)) is not None}
    return out


class LogWindow:
    """The JSON lines a process's log file got between `open()` and `close()`
    (by byte offset; the server writes one JSON object per line)."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.start = self.end = 0

    def open(self) -> None:
        self.start = self.log_path.stat().st_size

    def close(self) -> None:
        self.end = self.log_path.stat().st_size

    def lines(self, contains: bytes = b"") -> list[dict[str, Any]]:
        with self.log_path.open("rb") as f:
            f.seek(self.start)
            chunk = f.read(self.end - self.start)
        out = []
        for raw in chunk.splitlines():
            if contains and contains not in raw:
                continue
            try:
                out.append(json.loads(raw))
            except ValueError:
                continue
        return out


def run_load(
    spec: dict[str, Any],
    cpu_groups: dict[str, PidSource] | None = None,
    on_measure_start: Callable[[], None] | None = None,
    on_measure_end: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Run `bench.load` with `spec`; returns its result plus `cpu`: the cores
    each group of processes used during the measured window (`loadgen` is
    always included). `on_measure_start` / `on_measure_end` are called when
    the window opens / closes."""
    cpu_groups = dict(cpu_groups or {})
    hard_limit = float(spec.get("warmup", 1.0)) + float(spec.get("duration", 5.0)) + 60
    proc = subprocess.Popen(
        [sys.executable, "-m", spec.get("loadgen", "bench.load")],  # bench.http_load for HTTP
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    killer = threading.Timer(hard_limit, proc.kill)
    killer.start()
    cpu_groups["loadgen"] = lambda: [proc.pid]
    pids: dict[str, list[int]] = {}
    before: dict[str, dict[int, float]] = {}
    after: dict[str, dict[int, float]] = {}
    t_start = t_end = 0.0
    result: dict[str, Any] | None = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(spec))
        proc.stdin.close()
        for line in proc.stdout:
            line = line.strip()
            if line == "MEASURE_START":
                pids = {name: source() for name, source in cpu_groups.items()}
                t_start = time.monotonic()
                before = _sample(pids)
                if on_measure_start is not None:
                    on_measure_start()
            elif line == "MEASURE_END":
                after = _sample(pids)
                t_end = time.monotonic()
                if on_measure_end is not None:
                    on_measure_end()
            elif line.startswith("RESULT "):
                result = json.loads(line[len("RESULT ") :])
        code = proc.wait()
    finally:
        killer.cancel()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if result is None:
        raise RuntimeError(f"load generator exited with {code} without a result (spec {spec.get('method')})")
    wall = t_end - t_start
    cpu: dict[str, float] = {}
    if wall > 0:
        for name in pids:
            used = sum(after[name][pid] - cpu0 for pid, cpu0 in before[name].items() if pid in after[name])
            cpu[name] = used / wall
    result["cpu"] = cpu
    return result


# How many times every measured point runs, for the server and every peer alike, unless
# `bench.run --runs N` says otherwise: each figure is the median with its min and max.
RUNS = 3


class Options:
    """What `bench.run` passes to every bench."""

    def __init__(self, *, duration: float = 5.0, warmup: float = 1.0, profile: bool = False, runs: int = RUNS) -> None:
        self.duration = duration
        self.warmup = warmup
        # Sample the server with py-spy during the most loaded point (slows that point down).
        self.profile = profile
        # Same count for the server and every peer (see `interleave` and `Spread`).
        self.runs = runs


K = TypeVar("K", bound=Hashable)
R = TypeVar("R")


def interleave(names: Sequence[K], runs: int, measure: Callable[[K, int], R]) -> dict[K, list[R]]:
    """Call `measure(name, run_index)` `runs` times for every name, all names once per
    round, the order rotated each round so no name always runs right after the same
    other one (and machine drift spreads over all of them). Returns each name's
    results in run order; every name gets exactly `runs` results."""
    out: dict[K, list[R]] = {name: [] for name in names}
    for index in range(runs):
        for name in rotation(names, index):
            out[name].append(measure(name, index))
    return out


def rotation(names: Sequence[K], index: int) -> list[K]:
    """`names` rotated left by `index` (the order of round `index` in `interleave`)."""
    shift = index % len(names) if names else 0
    return [*names[shift:], *names[:shift]]


@dataclass(frozen=True)
class Spread:
    """The median of a figure's runs with their min and max: how every bench reports."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: Iterable[float]) -> Spread:
        data = [float(v) for v in values]
        if not data:
            raise ValueError("Spread of no runs")
        return cls(statistics.median(data), min(data), max(data), len(data))

    def fmt(self, spec: str = ".2f", scale: float = 1.0) -> str:
        """`median [min–max]` (just the median for a single run), each times `scale`."""
        med = format(self.median * scale, spec)
        if self.runs == 1:
            return med
        return f"{med} [{format(self.low * scale, spec)}–{format(self.high * scale, spec)}]"

    def __str__(self) -> str:
        return self.fmt()


def spread(runs: Iterable[dict[str, Any]], key: str) -> Spread:
    """`Spread` of one field over a list of result dicts (e.g. `run_load` results)."""
    return Spread.of(r[key] for r in runs)


class Outcome:
    """What a bench reports back: `valid` is False when any call failed (the
    numbers then mean nothing); `target_met` is None for benches without one."""

    def __init__(self, name: str, *, valid: bool, target_met: bool | None, summary: str) -> None:
        self.name = name
        self.valid = valid
        self.target_met = target_met
        self.summary = summary
