"""The toy's single-layer sweep at the default task size with probes off, in this process and on
Ray with 1 and 2 workers: wall time of each (one run each, interleaved order), and the ratios.

    python benchmarks/bench_sweep.py                 # all three
    python benchmarks/bench_sweep.py --modes local   # just one
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = {"local": [], "workers1": ["--workers", "1"], "workers2": ["--workers", "2"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--modes", default="local,workers1,workers2")
    ap.add_argument("--extra", default="", help="more analyze arguments, space separated")
    args = ap.parse_args()
    times = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in args.modes.split(","):
            out = Path(tmp) / mode
            cmd = [
                sys.executable,
                "-m",
                "layerprobe",
                "analyze",
                "--sweep",
                "single",
                "--no-probes",
                "--no-report",
                "--out",
                str(out),
                *MODES[mode],
                *args.extra.split(),
            ]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            times[mode] = time.perf_counter() - t0
            n = (out / "samples.jsonl").read_bytes().count(b"\n")
            print(f"{mode}: {times[mode]:.1f} s wall, {n} traces", flush=True)
    if "local" in times:
        for mode, t in times.items():
            if mode != "local":
                print(f"{mode} / local = {t / times['local']:.3f}")


if __name__ == "__main__":
    main()
