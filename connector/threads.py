"""The connector's background threads, named for the operating system too.

Python names a thread for itself only; ``top -H``, ``/proc/PID/task/*/comm`` and the
benchmark's CPU-per-thread figures see the kernel's name, which is the process's unless
the thread sets its own. librdkafka names its threads (``rdk:broker1``...); so do we
(``sender-0``, ``lag-monitor``, ``health``...), so the CPU of each part can be read from
outside. Linux only; elsewhere the threads keep the process's name.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable

_PR_SET_NAME = 15
_KERNEL_NAME_BYTES = 15  # the kernel keeps 16 bytes, the last one a NUL

_prctl: Callable[..., int] | None = None
if sys.platform.startswith("linux"):
    try:
        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):  # a libc without prctl: names are a convenience
        _prctl = None


def set_os_name(name: str) -> None:
    """Name the calling thread for the kernel (truncated to 15 bytes)."""
    if _prctl is not None:
        _prctl(_PR_SET_NAME, name.encode("utf-8")[:_KERNEL_NAME_BYTES], 0, 0, 0)


def daemon_thread(target: Callable[[], object], name: str) -> threading.Thread:
    """A daemon thread (not started) that runs ``target`` under ``name``, in Python and for the kernel."""

    def run() -> None:
        set_os_name(name)
        target()

    return threading.Thread(target=run, name=name, daemon=True)
