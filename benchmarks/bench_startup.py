"""How long `layerprobe --help` and `layerprobe CMD --help` take, each in a fresh process (the start of
the command line: Python, the app's imports and the help text), with the machine's load average.

    python benchmarks/bench_startup.py                 # every command, 5 runs each
    python benchmarks/bench_startup.py --runs 9 analyze prune

Run from the repository root with PYTHONPATH=src (or layerprobe installed). Prints the median, min and
max wall clock per command and the load average before and after (the machine may be shared: a time
measured under load says so). The target (issue #41) is under 1.5 s on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

COMMANDS = (
    "",
    "analyze",
    "report",
    "compare",
    "explain",
    "ingest",
    "judge",
    "runs",
    "prune",
    "heal",
    "influence",
    "inspect",
    "models",
    "tasks",
    "toy",
    "toy train",
    "toy eval",
)


def time_help(command: str, runs: int) -> list[float]:
    """Wall-clock seconds of `python -m layerprobe.cli.app COMMAND --help`, one fresh process per run."""
    argv = [sys.executable, "-m", "layerprobe.cli.app", *command.split(), "--help"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, env=env)
        out.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} exited {proc.returncode}: {proc.stderr.decode()[-400:]}")
    return out


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("commands", nargs="*", help="commands to time (default: every command; '' is `layerprobe --help`)")
    ap.add_argument("--runs", type=int, default=5, help="fresh processes per command")
    args = ap.parse_args()
    commands = args.commands or list(COMMANDS)
    print(f"load average before (1, 5, 15 min): {load()}; {os.cpu_count()} cores; {args.runs} runs per command")
    print(f"{'command':<28} {'median':>8} {'min':>8} {'max':>8}")
    worst = 0.0
    for command in commands:
        times = time_help(command, args.runs)
        med = statistics.median(times)
        worst = max(worst, med)
        label = f"layerprobe {command} --help".replace("  ", " ")
        print(f"{label:<28} {med:>7.2f}s {min(times):>7.2f}s {max(times):>7.2f}s")
    print(f"slowest median: {worst:.2f} s; load average after: {load()}")


if __name__ == "__main__":
    main()
