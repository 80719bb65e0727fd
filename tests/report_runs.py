"""Builds schema-valid run directories for the report tests through layerprobe.runs.RunStore.

The numbers are generated (not produced by a model) but go through the same writer, the same
metrics code and the same file layout as `layerprobe analyze`. Use `make_run` for cases a real
run cannot produce on demand: an interrupted run, a run without probes, a trace with markup.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from layerprobe.metrics import reflection_summary, repetition_summary, self_bleu_within_trace
from layerprobe.runs import RunStore
from layerprobe.runs.schema import (
    LayerAggregates,
    ModelInfo,
    RunConfig,
    RunInfo,
    SampleRecord,
    VariantSpec,
    trace_file_stem,
)
from layerprobe.runs.store import now, write_json_atomic
from layerprobe.runs.summarize import write_metrics

N_LAYERS = 6
BINS = 10


def _trace_text(rng: random.Random, correct: bool, loop: bool, n_steps: int) -> str:
    words = []
    v = rng.randrange(10)
    for i in range(1, n_steps + 1):
        op = rng.choice(["+3", "-2", "*7"])
        words += [f"s{i}", str(v), op, "=", str((v + 1) % 10)]
        v = (v + 1) % 10
        if rng.random() < 0.15:
            words.append("wait")
    if loop:
        words += ["s3", "4", "+3", "=", "7"] * 6
    return " ".join(words)


def make_run(
    out: Path,
    *,
    variants: tuple[tuple[str, list[int]], ...] = (("base", []), ("drop-3", [3])),
    groups: tuple[str, ...] = ("long", "short", "facts"),
    problems_per_group: int = 4,
    budgets: tuple[int, ...] = (16, 64),
    samples: int = 4,
    probes: bool = True,
    status: str = "complete",
    keep_fraction: float = 1.0,
    script_text: bool = False,
    write_metrics_file: bool = True,
    seed: int = 0,
    pid_prefix: str = "",
) -> Path:
    """A run directory with one base and pruned variants on toy-like groups."""
    rng = random.Random(seed)
    specs = []
    for name, dropped in variants:
        layer_map = [i for i in range(N_LAYERS) if i not in dropped]
        specs.append(VariantSpec(name=name, dropped=dropped, method=None if not dropped else "shortgpt",
                                 n_drop=len(dropped) or None, calibration={"source": "toy-traces"} if dropped else None,
                                 n_layers=len(layer_map), layer_map=layer_map))
    expected = len(specs) * len(groups) * problems_per_group * (len(budgets) + samples)
    info = RunInfo(
        layerprobe_version="0.1.0", command=["layerprobe", "analyze", "--test"], created=now(), updated=now(),
        config=RunConfig(model="toy", drops=[d for _, d in variants[1:]], budgets=list(budgets), samples=samples,
                         parallel_budget=max(budgets), temperature=0.6, top_p=0.95, top_k=20, answer_max=8, seed=seed,
                         probes=probes, teacher_forced=probes),
        model=ModelInfo(id="toy", source="embedded", family="qwen3", dtype="float32", n_layers=N_LAYERS),
        task={"name": "toy-mix", "source": "embedded", "answer_type": "digit", "n_problems": len(groups) * problems_per_group,
              "groups": {g: problems_per_group for g in groups}},
        variants=specs, expected_traces=expected,
    )
    store = RunStore.open(out, info)
    keys = []
    for vi, spec in enumerate(specs):
        for g in groups:
            for p in range(problems_per_group):
                pid = f"{pid_prefix}{g}-{p:03d}"
                for b in budgets:
                    keys.append((vi, spec, g, pid, "sequential", b, 0))
                for s in range(samples):
                    keys.append((vi, spec, g, pid, "parallel", max(budgets), s))
    keep = keys[: max(1, int(len(keys) * keep_fraction))]
    per_variant_arrays: dict[str, list[dict]] = {s.name: [] for s in specs}
    tf_arrays: dict[str, list[dict]] = {s.name: [] for s in specs}
    for vi, spec, g, pid, mode, b, s in keep:
        damage = len(spec.dropped)
        p_ok = {"long": 0.9 if b >= 64 else 0.4, "short": 0.95, "facts": 0.9}.get(g, 0.7)
        if g == "long":
            p_ok -= 0.6 * damage
        correct = rng.random() < max(0.02, p_ok)
        loop = damage > 0 and g == "long" and rng.random() < 0.6
        text = _trace_text(rng, correct, loop, 3 if g != "long" else 8)
        if script_text and vi == 1 and pid.endswith("000"):
            text = "<script>alert('pwned')</script> " + text
        toks = text.split()
        rep = repetition_summary(toks)
        thinking = min(len(toks), b)
        refl = reflection_summary(text, max(1, thinking))
        stem = trace_file_stem(pid, mode, b, s)
        layers_file = tf_file = None
        if probes:
            d = store.layers_dir(spec.name)
            T, layers = max(thinking, 2), spec.layer_map
            arr = {
                "layers": np.array(layers, dtype=np.int32),
                "tokens": np.arange(T, dtype=np.int32),
                "block_influence": np.array([[0.5 if i == 0 else 0.05 + 0.02 * i for i in layers]] * T, np.float16),
                "norm": np.array([[1 + i for i in layers]] * T, np.float16),
                "jsd": np.array([[max(0.0, 0.6 - 0.1 * i) + 0.05 * damage for i in layers]] * T, np.float16),
                "entropy": np.array([[2.0 - 0.2 * i for i in layers]] * T, np.float16),
                "top1_agree": np.array([[0.2 + 0.15 * i for i in layers]] * T, np.float16),
                "rank": np.ones((T, len(layers)), np.int32),
            }
            np.savez(d / f"{stem}.npz", **arr)
            layers_file = f"layers/{spec.name}/{stem}.npz"
            per_variant_arrays[spec.name].append(arr)
            if vi > 0 and mode == "sequential":
                (d / "tf").mkdir(exist_ok=True)
                kl = np.linspace(0.01, 0.3 * damage + 0.05 * rng.random(), T).astype(np.float32)
                tf = {"kl": kl, "drift": np.full((T, len(layers)), 0.1, np.float16),
                      "layers": np.array(layers, np.int32), "onset": np.array(T // 2 if loop else -1)}
                np.savez(d / "tf" / f"{stem}.npz", **tf)
                tf_file = f"layers/{spec.name}/tf/{stem}.npz"
                tf_arrays[spec.name].append(tf)
        store.append(SampleRecord(
            variant=spec.name, problem_id=pid, group=g, mode=mode, budget=b, sample=s, seed=rng.randrange(1 << 30),
            prompt_tokens=12, thinking_tokens=thinking, answer_tokens=3,
            finish="budget" if thinking >= b else "answered", waits=0,
            answer=str(rng.randrange(10)) if not loop else None, gold="4", correct=correct,
            reflections=refl, repetition=rep, self_bleu_within=self_bleu_within_trace(text.replace(" s", ". s")),
            thinking_text=text, text=text + " </think> \\boxed{4}", layers_file=layers_file, tf_file=tf_file,
        ))
    if probes:
        for spec in specs:
            arrs = per_variant_arrays[spec.name]
            if not arrs:
                continue
            per_layer = {k: np.mean([a[k].astype(np.float64).mean(axis=0) for a in arrs], axis=0).tolist()
                         for k in ("block_influence", "norm", "jsd", "entropy", "top1_agree")}
            heat = {k: [[float(per_layer[k][li]) * (0.8 + 0.04 * b) for b in range(BINS)]
                        for li in range(len(spec.layer_map))] for k in ("jsd", "entropy")}
            tf = None
            if tf_arrays[spec.name]:
                tfs = tf_arrays[spec.name]
                tf = {"mean_kl": float(np.mean([t["kl"].mean() for t in tfs])),
                      "kl_by_relpos": np.linspace(0.02, 0.3 * len(spec.dropped), BINS).tolist(),
                      "onset_rate": float(np.mean([int(t["onset"]) >= 0 for t in tfs])),
                      "drift_per_layer": [0.1] * len(spec.layer_map), "n_traces": len(tfs)}
            agg = LayerAggregates(
                variant=spec.name, layers=spec.layer_map, dropped=spec.dropped, n_layers_original=N_LAYERS,
                n_traces=len(arrs), n_tokens=int(sum(a["tokens"].shape[0] for a in arrs)), per_layer=per_layer,
                heatmaps=heat, heatmap_bins=BINS,
                settling={"g": 0.5, "rho": 0.85, "mean_depth_fraction": 0.5 + 0.1 * len(spec.dropped),
                          "mean_depth_original": 2.5 + len(spec.dropped), "deep_thinking_ratio": 0.1 + 0.1 * len(spec.dropped),
                          "histogram": [3, 5, 8, 4, 2, 1][: len(spec.layer_map)]},
                teacher_forced=tf,
            )
            write_json_atomic(out / "layers" / f"{spec.name}.json", agg.model_dump(mode="json"))
    store.close(status)
    if write_metrics_file:
        write_metrics(out)
    return out


def corrupt_json(path: Path) -> None:
    path.write_text(json.dumps({"not": "a run"}))
