"""Helper processes (the math-verify worker): they end with the process that started them, however it
ends (kill -9 included), and never hold its terminal or pipes."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int) -> None:
    """Initializer of a helper process started by process `parent`: stdin/stdout/stderr go to
    /dev/null (a caller reading the parent's output must see it end when the parent ends); on Linux
    the kernel kills this process when its parent dies; elsewhere, and as a second guard, a thread
    exits when the parent is gone."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()
