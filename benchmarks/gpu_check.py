"""One call that measures layerprobe at the study's shape on a GPU and writes one JSON file.

    python benchmarks/gpu_check.py                      # CUDA: s1.1-7B's shape, 28 layers, bfloat16 (≤ 8 min on one H100)
    python benchmarks/gpu_check.py --tiny               # CPU, seconds: a tiny model of the same layout (the test suite runs this)
    python benchmarks/gpu_check.py --device cpu --dtype float32 --layers 2 --quick   # the reduced 7B on CPU

The model has the real shape and random weights (benchmarks/_shapes.py: no download; cost and memory do
not depend on the weights). The measurements are the CPU benchmarks' own functions:

- prefill   bench_prefill.measure_prefill: probes by prefill at 512 and 2,048 trace tokens against
            plain prefill and the floor, peak memory, file bytes per token and layer;
- memory    bench_prefill.measure_memory: the full-lens prefill of one long trace (8,192 and 32,768
            tokens), peak memory against probe.costs' prediction;
- live      bench_probes.measure_speed: generation at batch 4 and 16 with the live probe (block
            influence + norm; full lens) against plain generation;
- trace     bench_prefill.measure_generation: one greedy trace, live probe against prefill probe;
- capacity  one forward pass filling the KV cache of 16 sequences × 8,192 positions, peak memory
            against probe.costs (weights + KV cache + activations);
then probe.costs' predictions for every measurement beside it, and the time each part took. A part
that fails (out of memory, say) is recorded with its error and the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _plan(args: argparse.Namespace) -> dict[str, Any]:
    """What each part measures, by size of run."""
    if args.tiny:
        return {"prefill": [32, 64], "memory": [128, 512], "live": [(2, 4)], "trace": 4, "capacity": (2, 64), "repeats": 1}
    if args.quick:  # the reduced 7B on a CPU: what a CPU affords
        return {"prefill": [512], "memory": [2048], "live": [(4, 16)], "trace": 16, "capacity": (4, 512), "repeats": 1}
    return {
        "prefill": [512, 2048],
        "memory": [8192, 32768],
        "live": [(4, 64), (16, 64)],
        "trace": 128,
        "capacity": (16, 8192),
        "repeats": 3,
    }


def capacity(loaded: Any, batch: int, positions: int) -> dict[str, Any]:
    """One prefill of `batch` × `positions` random tokens that fills the KV cache (the engine's first
    step at that size), peak memory against probe.costs."""
    import torch
    from bench_prefill import Peak
    from transformers import DynamicCache

    from layerprobe.models.hooks import cache_kwarg, last_logits_kwarg
    from layerprobe.probe import costs

    shape = costs.shape_of(loaded.model.config, loaded.name)
    b = torch.finfo(loaded.dtype).bits // 8
    ids = torch.randint(2, 90, (batch, positions), device=loaded.device)
    cache = DynamicCache(config=loaded.model.config)
    t0 = time.perf_counter()
    with torch.inference_mode(), Peak(loaded.device) as peak:
        loaded.model(input_ids=ids, use_cache=True, **cache_kwarg(loaded.model, cache), **last_logits_kwarg(loaded.model))
    kv = costs.kv_bytes(shape, positions, batch, b)
    return {
        "batch": batch,
        "positions": positions,
        "seconds": time.perf_counter() - t0,
        "peak_growth_mib": peak.growth,
        "kv_cache_mib": kv / 2**20,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tiny", action="store_true", help="CPU, a tiny model of s1.1-7B's layout, float32: a smoke test in seconds")
    ap.add_argument("--quick", action="store_true", help="fewer and shorter measurements (a CPU run of a large shape)")
    ap.add_argument("--shape", default=None, help="s1.1-7b (default), qwen3-8b or smollm2-135m")
    ap.add_argument("--layers", type=int, default=None, help="decoder layers (default: the model's)")
    ap.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    ap.add_argument("--dtype", default=None, help="default: bfloat16 on cuda, float32 on cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads on CPU")
    ap.add_argument("--out", type=Path, default=Path("gpu_check.json"))
    args = ap.parse_args()

    import torch

    shape_name = args.shape or ("tiny" if args.tiny else "s1.1-7b")
    layers = args.layers
    device = args.device or ("cpu" if args.tiny else "cuda")
    if device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device here: give --device cpu (and --tiny or --layers N --quick on a CPU)", file=sys.stderr)
        return 2
    import _shapes  # after the check: these import transformers (seconds)
    import bench_prefill
    import bench_probes

    from layerprobe.probe import costs

    dtype = args.dtype or ("bfloat16" if device.startswith("cuda") else "float32")
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = _plan(args)
    t_start = time.perf_counter()
    report: dict[str, Any] = {
        "command": sys.argv,
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": platform.node(),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "shape": shape_name,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "loadavg_before": os.getloadavg(),
        "plan": plan,
        "parts": {},
    }
    if device.startswith("cuda"):
        report["gpu_memory_gib"] = torch.cuda.get_device_properties(0).total_memory / 2**30

    def part(name: str, fn: Any) -> None:
        t0 = time.perf_counter()
        try:
            report["parts"][name] = {"result": fn()}
        except Exception as exc:  # noqa: BLE001 - one failed part (out of memory) must not lose the others
            report["parts"][name] = {
                "error": f"{type(exc).__name__}: {str(exc)[:500]}",
                "traceback": traceback.format_exc()[-2000:],
            }
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        report["parts"][name]["seconds"] = time.perf_counter() - t0
        print(
            f"{name}: {report['parts'][name]['seconds']:.1f} s" + (" (failed)" if "error" in report["parts"][name] else ""),
            flush=True,
        )
        args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")  # what is done so far, should a later part hang

    t0 = time.perf_counter()
    loaded = _shapes.load(shape_name, layers, device, dtype)
    report["load_s"] = time.perf_counter() - t0
    s = costs.shape_of(loaded.model.config, loaded.name)
    b = torch.finfo(loaded.dtype).bits // 8
    report["model"] = {
        "name": loaded.name,
        "layers": s.layers,
        "params": s.params,
        "weights_gib": costs.weights_bytes(s, b) / 2**30,
    }
    print(
        f"{loaded.name}: {s.layers} layers, {s.params / 1e9:.2f} B parameters on {device} in {dtype} ({report['load_s']:.0f} s)",
        flush=True,
    )

    part("prefill", lambda: bench_prefill.measure_prefill(loaded, plan["prefill"], plan["repeats"]))
    part("memory", lambda: [bench_prefill.measure_memory(loaded, n) for n in plan["memory"]])
    part(
        "live",
        lambda: [
            bench_probes.measure_speed(loaded, batch, n, 1, plan["repeats"], torch.get_num_threads(), "think-tags")
            for batch, n in plan["live"]
        ],
    )
    part("trace", lambda: bench_prefill.measure_generation(loaded, plan["trace"], plan["repeats"]))
    part("capacity", lambda: capacity(loaded, *plan["capacity"]))

    # what probe.costs predicts for the same measurements
    pred: dict[str, Any] = {"weights_mib": costs.weights_bytes(s, b) / 2**20}
    pred["prefill_full_peak_growth_mib"] = {
        str(n): costs.prefill_bytes(s, n + 20, 1, b) / 2**20 for n in plan["prefill"]
    }  # + the prompt's ~20 positions
    pred["file_bytes_per_token_layer_uncompressed"] = costs.STORED_BYTES_PER_TOKEN_LAYER + costs.STORED_BYTES_PER_TOKEN / s.layers
    bsz, pos = plan["capacity"]
    pred["capacity_kv_mib"] = costs.kv_bytes(s, pos, bsz, b) / 2**20
    pred["capacity_activations_mib"] = costs.forward_activation_bytes(s, bsz * pos, b) / 2**20
    if device.startswith("cuda"):
        mem = torch.cuda.get_device_properties(0).total_memory
        pred["max_batch_8448_positions_probes"] = costs.max_batch(s, 8448, mem, b)
        pred["decode_step_ms_batch"] = {
            str(bt): 1e3 * costs.decode_step_seconds(s, bt, 300, costs.H100, b) for bt, _ in plan["live"]
        }
    report["predicted"] = pred
    report["seconds"] = time.perf_counter() - t_start
    report["loadavg_after"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    failed = [k for k, v in report["parts"].items() if "error" in v]
    print(f"wrote {args.out} in {report['seconds']:.0f} s" + (f"; failed: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
