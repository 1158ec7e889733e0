"""A child process the tests start (server or worker): its log and its stop."""

from __future__ import annotations

import signal
import subprocess
import weakref
from pathlib import Path
from typing import ClassVar


class ChildProcess:
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    stop_timeout: float = 30.0
    _started: ClassVar[weakref.WeakSet[ChildProcess]] = weakref.WeakSet()

    def _track(self) -> None:
        ChildProcess._started.add(self)

    @classmethod
    def stop_all(cls) -> None:
        for child in list(cls._started):
            child.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float | None = None) -> int:
        """Signal it and wait (SIGKILL after the timeout); returns the exit code."""
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout or self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()
