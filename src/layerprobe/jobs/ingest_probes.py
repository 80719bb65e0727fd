"""The probes of an ingest: each trace's arrays by prefill (batched) as its records are written, and once
they are written every variant's metrics and, with probes, the teacher-forced comparisons and per-layer
aggregates (docs/ingest.md)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layerprobe.data.schema import RunInfo, SampleRecord, trace_file_stem
from layerprobe.rules import inside


@dataclass
class Pending:
    """A trace's record waiting to be written, with the token ids its probes run through the model."""

    record: SampleRecord
    prompt_ids: list[int]
    ids: list[int]
    probe: bool
    """Probe this trace (False: its record is written without arrays)."""


def prefill_layers(loaded: Any, out: Path, pending: Sequence[Pending], lens: bool, batch_size: int) -> dict[int, str]:
    """Probe by prefill (probe.prefill, `batch_size` traces per forward pass) the traces of `pending`
    marked `probe` through `loaded`, and write each one's arrays into the run at `out`; returns index in
    `pending` -> the layers_file of its record."""
    layers: dict[int, str] = {}
    batch = [(i, t) for i, t in enumerate(pending) if t.probe]
    if batch:
        from layerprobe.jobs.records import save_layers
        from layerprobe.probe.prefill import PrefillItem, prefill_many

        for tl in prefill_many(loaded, [PrefillItem(i, t.prompt_ids, t.ids) for i, t in batch], lens=lens, batch_size=batch_size):
            index = int(tl.key)
            rec = pending[index].record
            layers[index] = save_layers(out, rec.variant, rec.problem_id, rec.mode, rec.budget, rec.sample, tl)
    return layers


def after_ingest(out: Path, base: Any, probes: bool, map_fn: Any, info: RunInfo, records: Sequence[SampleRecord]) -> None:
    """Metrics for every variant of the run (`info` and `records`: the run as written; `map_fn` maps the
    Self-BLEU across samples over problems); with probes, teacher-forced comparison of every pruned
    variant (one that lacks original layers of `base`, the full model in memory) along the base traces
    it shares a key with, where not done yet, and per-layer aggregates."""
    from layerprobe.data.reader import load_run
    from layerprobe.data.summarize import write_metrics
    from layerprobe.jobs.probing import write_layer_aggregates
    from layerprobe.prune.surgery import drop_layers

    write_metrics(out, info, records, map_fn=map_fn)  # first, so that load_run reads them
    if not probes:
        return
    run = load_run(out, extras=False)
    base_name = run.base
    base_spec = run.variants[0]
    if not base.dropped and not base_spec.dropped:
        from layerprobe.data.schema import teacher_forced_file
        from layerprobe.probe.layer_files import DamagedFile, load_trace_tokens
        from layerprobe.probe.teacher import save_teacher_forced, teacher_forced_many

        tok = base.tokenizer
        pruned = [v for v in run.variants[1:] if v.dropped and v.checkpoint is None]
        keys = {v.name: {r.key()[1:] for r in run.samples if r.variant == v.name and r.layers_file} for v in pruned}
        model_of = {v.name: drop_layers(base, v.dropped) for v in pruned}  # built once, shared by every trace
        for r in run.samples:
            if r.variant != base_name or not inside(out, r.layers_file):
                continue
            todo = [
                v
                for v in pruned
                if r.key()[1:] in keys[v.name]
                and not (out / teacher_forced_file(v.name, r.problem_id, r.mode, r.budget, r.sample)).is_file()
            ]
            if not todo:
                continue
            prompt = (r.external or {}).get("prompt", "")
            try:
                tokens = load_trace_tokens(out / str(r.layers_file))
            except DamagedFile:  # a damaged probe file: this trace gets no teacher-forced comparison
                continue
            tfs = teacher_forced_many(
                base,
                [model_of[v.name] for v in todo],
                tok.encode(prompt, add_special_tokens=False),
                tokens,
                key=trace_file_stem(r.problem_id, r.mode, r.budget, r.sample),
            )
            for v, tf in zip(todo, tfs):
                save_teacher_forced(out / teacher_forced_file(v.name, r.problem_id, r.mode, r.budget, r.sample), tf)
    seq = [r for r in run.samples if r.variant == base_name and r.mode == "sequential"]
    top = max((r.budget for r in seq), default=None)
    base_seq = [r for r in seq if r.budget == top]
    for spec in run.variants:
        write_layer_aggregates(
            out,
            spec,
            [r for r in run.samples if r.variant == spec.name],
            run.n_layers,
            base_traces=base_seq if spec.name != base_name else (),
        )
