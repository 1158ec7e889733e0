"""A worker started by another process (the demo server's local worker) ends
with it."""

from __future__ import annotations

import ctypes
import os
import signal

_PR_SET_PDEATHSIG = 1


def exit_with_parent(parent_pid: int) -> bool:
    """Ask the kernel for SIGTERM when the parent exits. Returns False when the
    parent is no longer `parent_pid` (it exited before the worker could ask);
    True otherwise, including on a platform without prctl."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        return True
    # prctl covers only deaths after it; an earlier one shows as a new parent.
    return os.getppid() == parent_pid
