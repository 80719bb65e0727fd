"""Text-only ingest at the study's scale: 10,000 traces (benchmarks/make_traces.py) through
`layerprobe ingest --no-probes`, timed, with the memory of the command and its worker processes
sampled as it goes. Target: at most 5 minutes on 2 idle cores, memory flat.

    python benchmarks/bench_ingest.py                         # 10,000 traces, default workers
    python benchmarks/bench_ingest.py --traces 2000 --workers 0

Prints the load average before and after (the machine may be shared), wall and CPU time, the cores
used (CPU / wall), the peak memory of the command and of all its processes together, and that memory
at each tenth of the traces (read from the progress of samples.jsonl), so growth would show.
Exit status 1 when the command fails.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import make_traces  # noqa: E402

PAGE = os.sysconf("SC_PAGE_SIZE")


def _tree(root: int) -> list[int]:
    """root and every process below it (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (None once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK
    except (OSError, IndexError, ValueError):
        return None


def _rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (OSError, IndexError, ValueError):
        return 0.0


def _lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
    except OSError:
        return 0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--traces", type=int, default=10_000)
    ap.add_argument("--lengths", choices=("protocol", "wide"), default="protocol")
    ap.add_argument("--data", type=Path, default=Path("runs/bench-ingest-traces"), help="where the traces are written (kept)")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-ingest"), help="the run directory (replaced)")
    ap.add_argument("--workers", default=None, help="--workers of ingest (default: its own)")
    ap.add_argument("--tokenizer", default="smollm2-135m")
    ap.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = ap.parse_args()

    data = args.data / f"{args.lengths}-{args.traces}"
    if not any(data.glob("m*.jsonl")):
        t0 = time.perf_counter()
        make_traces.write(data, args.traces, 0, args.lengths)
        print(f"wrote {args.traces} traces to {data} in {time.perf_counter() - t0:.1f} s")
    files = sorted(data.glob("m*.jsonl"))
    size = sum(f.stat().st_size for f in files)
    if args.out.exists():
        shutil.rmtree(args.out)
    cmd = [sys.executable, "-m", "layerprobe.cli.app", "ingest", *map(str, files), "--from", "jsonl", "--model", "s1.1-7b"]
    cmd += ["--tokenizer", args.tokenizer, "--no-probes", "--task", "aime24", "--out", str(args.out), "--no-report"]
    if args.workers is not None:
        cmd += ["--workers", str(args.workers)]
    print("$ " + " ".join(cmd))
    load_before = os.getloadavg()
    t_start = time.perf_counter()
    c0 = os.times()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak_main = peak_all = 0.0
    marks: dict[int, float] = {}
    samples = args.out / "samples.jsonl"
    last_count = last_tree = 0.0
    pids = [proc.pid]
    cpu_of: dict[int, float] = {}
    while proc.poll() is None:
        if time.perf_counter() - last_tree > 5.0:  # the workers start once; look for them now and then
            last_tree = time.perf_counter()
            pids = _tree(proc.pid)
        rss = [_rss_mb(p) for p in pids]
        for p in pids:
            c = _cpu_s(p)
            if c is not None:
                cpu_of[p] = c
        total = sum(rss)
        peak_main, peak_all = max(peak_main, rss[0] if rss else 0.0), max(peak_all, total)
        if time.perf_counter() - last_count > 2.0:  # count the stored traces now and then
            last_count = time.perf_counter()
            tenth = _lines(samples) * 10 // args.traces
            if tenth not in marks:
                marks[tenth] = total
        time.sleep(0.5)
    wall = time.perf_counter() - t_start
    c1 = os.times()
    output = proc.stdout.read() if proc.stdout else ""
    cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    load_after = os.getloadavg()
    print(output.strip())
    n = _lines(samples)
    result = {
        "traces": n,
        "input_mib": size / 2**20,
        "wall_s": wall,
        "cpu_s": cpu,
        "cores_used": cpu / wall,
        "cpu_main_s": cpu_of.get(proc.pid),
        "cpu_workers_s": [v for k, v in cpu_of.items() if k != proc.pid],
        "peak_rss_main_mib": peak_main,
        "peak_rss_all_mib": peak_all,
        "rss_at_tenths_mib": {str(k): round(v) for k, v in sorted(marks.items())},
        "load_before": load_before,
        "load_after": load_after,
        "cores": os.cpu_count(),
        "command": cmd,
    }
    print(
        f"\n{n} traces ({size / 2**20:.0f} MiB of JSONL) in {wall:.1f} s wall, {cpu:.1f} s CPU "
        f"({cpu / wall:.2f} cores; the command itself at least {cpu_of.get(proc.pid, 0):.1f} s, its workers at least "
        f"{', '.join(f'{v:.1f}' for k, v in cpu_of.items() if k != proc.pid) or '-'} s); peak memory {peak_main:.0f} MiB (command), {peak_all:.0f} MiB (with its workers)"
    )
    print(
        "memory of all its processes at each tenth of the traces stored (MiB): "
        + ", ".join(f"{k}0 %: {v:.0f}" for k, v in sorted(marks.items()))
    )
    print(
        f"load average before {load_before[0]:.2f} / {load_before[1]:.2f} / {load_before[2]:.2f}, after {load_after[0]:.2f} / {load_after[1]:.2f} / {load_after[2]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1) + "\n")
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
