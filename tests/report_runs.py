"""Builds run directories for the report tests through the real writers of `layerprobe analyze`.

The traces and per-layer arrays are generated (not produced by a model), but every file goes through
the writer `analyze` uses: RunStore for run.json and samples.jsonl, probe.layer_files / probe.teacher for
the arrays, runs.probing for layers/<variant>.json and runs.summarize for metrics.json. Use
`make_run` for cases a real run cannot produce on demand: an interrupted run, a run without probes,
a trace with markup.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np

from layerprobe.data import RunStore
from layerprobe.data.schema import (
    ModelInfo,
    RunConfig,
    RunInfo,
    SampleRecord,
    TaskRecord,
    VariantSpec,
    trace_file_stem,
)
from layerprobe.data.store import now
from layerprobe.data.summarize import write_metrics
from layerprobe.jobs.probing import write_layer_aggregates
from layerprobe.jobs.records import trace_fields
from layerprobe.probe.layer_files import TraceLayers, save_trace_layers
from layerprobe.probe.teacher import TeacherForced, kl_onset, save_teacher_forced

N_LAYERS = 6


def _trace_text(rng: random.Random, loop: bool, n_steps: int) -> str:
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


def _layers(T: int, layers: list[int], damage: int, key: str) -> TraceLayers:
    rows = lambda f: np.array([[f(i) for i in layers]] * T, np.float32)
    return TraceLayers(
        key=key,
        layers=np.array(layers, np.int16),
        tokens=np.arange(T, dtype=np.int32),
        block_influence=rows(lambda i: 0.5 if i == 0 else 0.05 + 0.02 * i),
        norm=rows(lambda i: 1.0 + i),
        jsd=rows(lambda i: max(0.0, 0.6 - 0.1 * i) + 0.05 * damage),
        entropy=rows(lambda i: 2.0 - 0.2 * i),
        top1_agree=rows(lambda i: 0.2 + 0.15 * i),
        rank=np.ones((T, len(layers)), np.int32),
        n_layers_original=N_LAYERS,
    )


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
        specs.append(
            VariantSpec(
                name=name,
                dropped=dropped,
                method=None if not dropped else "shortgpt",
                n_drop=len(dropped) or None,
                calibration={"source": "toy-traces"} if dropped else None,
                n_layers=len(layer_map),
                layer_map=layer_map,
            )
        )
    expected = len(specs) * len(groups) * problems_per_group * (len(budgets) + samples)
    info = RunInfo(
        layerprobe_version="0.1.0",
        command=["layerprobe", "analyze", "--test"],
        created=now(),
        updated=now(),
        config=RunConfig(
            model="toy",
            drops=[d for _, d in variants[1:]],
            budgets=list(budgets),
            samples=samples,
            parallel_budget=max(budgets),
            temperature=0.6,
            top_p=0.95,
            top_k=20,
            answer_max=8,
            seed=seed,
            probes=probes,
            teacher_forced=probes,
        ),
        model=ModelInfo(id="toy", source="embedded", family="qwen3", dtype="float32", n_layers=N_LAYERS),
        task=TaskRecord(
            name="toy-mix",
            source="embedded",
            answer_type="digit",
            n_problems=len(groups) * problems_per_group,
            groups={g: problems_per_group for g in groups},
        ),
        variants=specs,
        expected_traces=expected,
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
    for vi, spec, g, pid, mode, b, s in keep:
        damage = len(spec.dropped)
        p_ok = {"long": 0.9 if b >= 64 else 0.4, "short": 0.95, "facts": 0.9}.get(g, 0.7)
        if g == "long":
            p_ok -= 0.6 * damage
        correct = rng.random() < max(0.02, p_ok)
        loop = damage > 0 and g == "long" and rng.random() < 0.6
        text = _trace_text(rng, loop, 3 if g != "long" else 8)
        if script_text and vi == 1:
            text = "<script>alert('pwned')</script> " + text
        words = text.split()
        thinking = min(len(words), b)
        stem = trace_file_stem(pid, mode, b, s)
        layers_file = tf_file = None
        if probes:
            T = max(thinking, 2)
            rel = f"layers/{spec.name}/{stem}.npz"
            save_trace_layers(out / rel, _layers(T, spec.layer_map or [], damage, stem))
            layers_file = rel
            if vi > 0 and mode == "sequential" and b == max(budgets):
                kl = np.linspace(0.01, 0.3 * damage + 0.05 * rng.random(), T).astype(np.float32)
                matched = [i for i in range(N_LAYERS) if i in (spec.layer_map or [])]
                tf = TeacherForced(
                    kl=kl,
                    drift=np.full((T, len(matched)), 0.1, np.float32),
                    layers=np.array(matched, np.int16),
                    tokens=np.arange(T, dtype=np.int32),
                    threshold=0.1,
                    window=4,
                    onset=kl_onset(kl, 0.1, 4),
                    jsd_to_base=np.full((T, len(matched)), 0.2, np.float32),
                    top1=np.arange(T, dtype=np.int32),
                    base_top1=np.arange(T, dtype=np.int32),
                )
                tf_file = f"layers/{spec.name}/tf/{stem}.npz"
                save_teacher_forced(out / tf_file, tf)
        ids = [hash(w) % 97 for w in words]
        store.append(
            SampleRecord(
                variant=spec.name,
                problem_id=pid,
                group=g,
                mode=mode,
                budget=b,
                sample=s,
                seed=rng.randrange(1 << 30),
                prompt_tokens=12,
                thinking_tokens=thinking,
                answer_tokens=3,
                finish="budget" if thinking >= b else "answered",
                budget_hit=thinking >= b,
                waits=0,
                answer=str(rng.randrange(10)) if not loop else None,
                extraction="boxed" if not loop else None,
                gold="4",
                correct=correct,
                **trace_fields(text, ids, lambda xs, words=words: " ".join(words[: len(xs)]) + (" " if xs else "")),
                thinking_text=text,
                text=text + " </think> \\boxed{4}",
                layers_file=layers_file,
                tf_file=tf_file,
            )
        )
    if probes:
        for spec in specs:
            base_seq = [
                r for r in store.records if r.variant == specs[0].name and r.mode == "sequential" and r.budget == max(budgets)
            ]
            write_layer_aggregates(
                out,
                spec,
                [r for r in store.records if r.variant == spec.name],
                N_LAYERS,
                base_traces=base_seq if spec.name != specs[0].name else (),
            )
    store.close(status)
    if write_metrics_file:
        write_metrics(out)
    return out


def corrupt_json(path: Path) -> None:
    path.write_text(json.dumps({"not": "a run"}))
