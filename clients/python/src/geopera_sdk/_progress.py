"""Progress bars on stderr: tqdm when installed, else a minimal built-in bar.

Only when stderr is a terminal; nothing otherwise. Never logs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from typing import Any, Protocol, TextIO


class Bar(Protocol):
    def update(self, done: float, note: str = "") -> None: ...

    def close(self) -> None: ...


class _NullBar:
    def update(self, done: float, note: str = "") -> None:
        pass

    def close(self) -> None:
        pass


class _CallbackBar:
    def __init__(self, callback: Callable[[float, float], Any], total: float) -> None:
        self._callback = callback
        self._total = total

    def update(self, done: float, note: str = "") -> None:
        self._callback(done, self._total)

    def close(self) -> None:
        pass


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class _PlainBar:
    """`\\r<desc> |#######.......|  42% <note>` rewritten in place."""

    WIDTH = 30

    def __init__(self, stream: TextIO, total: float, desc: str, unit: str) -> None:
        self._stream = stream
        self._total = total
        self._desc = desc
        self._unit = unit
        self._last = ""
        self._last_time = 0.0
        self._width = 0

    def update(self, done: float, note: str = "") -> None:
        fraction = min(1.0, max(0.0, done / self._total)) if self._total > 0 else 0.0
        filled = round(fraction * self.WIDTH)
        amount = f" {_human(done)}/{_human(self._total)}" if self._unit == "B" and self._total > 0 else ""
        line = f"{self._desc} |{'#' * filled}{'.' * (self.WIDTH - filled)}| {fraction * 100:3.0f}%{amount}"
        if note:
            line += f" {note}"
        now = time.monotonic()
        if line == self._last or (now - self._last_time < 0.05 and fraction < 1.0 and note == ""):
            return
        self._last, self._last_time = line, now
        padding = " " * max(0, self._width - len(line))
        self._width = len(line)
        self._stream.write("\r" + line + padding)
        self._stream.flush()

    def close(self) -> None:
        if self._last:
            self._stream.write("\n")
            self._stream.flush()


class _TqdmBar:
    def __init__(self, tqdm: Any, stream: TextIO, total: float, desc: str, unit: str) -> None:
        self._scale = 100.0 if unit == "%" else 1.0
        sized = _has_size(stream)
        self._bar = tqdm(
            total=total * self._scale,
            desc=desc,
            file=stream,
            unit=unit,
            unit_scale=unit == "B",
            unit_divisor=1024,
            leave=True,
            # A terminal that reports no size (a fresh pty: 0x0) would hide the bar.
            dynamic_ncols=sized,
            ncols=None if sized else 80,
            nrows=None if sized else 24,
            bar_format="{l_bar}{bar}| {postfix}" if unit == "%" else None,
        )

    def update(self, done: float, note: str = "") -> None:
        self._bar.n = done * self._scale
        if note:
            self._bar.set_postfix_str(note, refresh=False)
        self._bar.refresh()

    def close(self) -> None:
        self._bar.close()


def _has_size(stream: TextIO) -> bool:
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError):
        return False
    return size.columns > 0 and size.lines > 0


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def open_bar(progress: bool | Callable[..., Any], *, total: float, desc: str, unit: str) -> Bar:
    """A bar for `progress`: a callable gets `(done, total)`; True draws on a
    terminal stderr (tqdm if importable, else the built-in bar); False, or a
    stderr that is not a terminal, draws nothing. `unit` is `B` or `%` (total 1)."""
    if callable(progress) and not isinstance(progress, bool):
        return _CallbackBar(progress, total)
    stream = sys.stderr
    if not progress or stream is None or not _isatty(stream):
        return _NullBar()
    try:
        from tqdm import tqdm  # optional dependency
    except Exception:
        return _PlainBar(stream, total, desc, unit)
    try:
        return _TqdmBar(tqdm, stream, total, desc, unit)
    except Exception:
        return _PlainBar(stream, total, desc, unit)
