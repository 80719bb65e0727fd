"""Helper processes end with the process that started them, however it ends."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

CHILD = r"""
from layerprobe.tasks.grading import MathGrader
g = MathGrader()
print(g.equivalent("\\frac{1}{2}", "\\boxed{0.5}"), flush=True)
import time
time.sleep(600)
"""


def test_math_worker_dies_with_a_killed_parent_and_releases_its_pipes():
    """A caller that reads layerprobe's output must see it end when layerprobe is killed -9: the
    math-verify worker (a spawned process) neither survives nor keeps the pipe open."""
    p = subprocess.Popen([sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert p.stdout is not None and p.stdout.readline().strip() == b"True"  # the worker is running
        reader = threading.Thread(target=p.stdout.read, daemon=True)  # returns when no process holds the pipe
        t0 = time.monotonic()
        os.kill(p.pid, signal.SIGKILL)
        reader.start()
        reader.join(15)
        assert not reader.is_alive(), "a helper process outlived its killed parent and holds its stdout"
        assert time.monotonic() - t0 < 15
    finally:
        p.kill()
        p.wait()
