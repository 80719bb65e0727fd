"""Causal restoration (docs/explain.md#causal-layer-restoration): the removed layers put back, gated per
position and token class, teacher-forced along the base traces (KL recovery) and, for token classes, in
free greedy generation on long chains (accuracy recovery)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe.data.reader import Run
from layerprobe.data.schema import Restoration, SampleRecord
from layerprobe.jobs.job import ProgressFn
from layerprobe.metrics.paired import N_BOOT, bootstrap
from layerprobe.metrics.reflection import reflection_spans
from layerprobe.metrics.token_classes import (
    POSITION_CLASSES,
    TOKEN_CLASSES,
    class_masks,
    decoded,
    token_classes,
    vocab_classes,
)
from layerprobe.probe.layer_files import DamagedFile, load_trace_tokens
from layerprobe.rules import inside


class Skip(Exception):
    """A part of explain that does not apply to this run; the message says why."""


def _ratio_ci(num: np.ndarray, den: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of 1 - sum(num) / sum(den), resampling the rows (traces or problems); resamples
    whose sum(den) is 0 are left out, and (nan, nan) when fewer than half remain."""

    def ratio(i: np.ndarray) -> float:
        d = den[i].sum()
        return 1.0 - num[i].sum() / d if d > 0 else math.nan

    vals = bootstrap(ratio, num.shape[0], N_BOOT, seed)
    if len(vals) < N_BOOT // 2:
        return math.nan, math.nan
    lo, hi = np.quantile(vals, [0.025, 0.975])
    return float(lo), float(hi)


def prompts(run: Run, tokenizer: Any) -> Callable[[SampleRecord], str | None]:
    """The prompt text each trace was generated from: the one stored with an ingested trace (what was
    ingested is what is probed), else rebuilt from the run's task as `analyze` built it."""
    if run.info.origin == "ingest":
        return lambda r: (r.external or {}).get("prompt") if isinstance((r.external or {}).get("prompt"), str) else None
    from layerprobe.scaling.engine import build_prompt
    from layerprobe.scaling.formats import detect_format

    fmt = detect_format(tokenizer, run.info.config.reasoning_format)
    question = {p.id: p.question for p in run_problems(run)}
    return lambda r: build_prompt(tokenizer, fmt, question[r.problem_id]) if r.problem_id in question else None


def run_problems(run: Run) -> list[Any]:
    """The problems of an analyze run, loaded as analyze loaded them."""
    from layerprobe.tasks.registry import load_problems

    _, problems, _ = load_problems(
        run.info.task.name,
        run.info.config.limit,
        run.info.config.seed or 0,
        Path(run.info.config.task_file) if run.info.config.task_file else None,
    )
    return problems


def restoration_kl(
    run: Run,
    base: Any,
    variant: str,
    dropped: Sequence[int],
    progress: ProgressFn | None = None,
    damaged: list[str] | None = None,
) -> list[Restoration]:
    """KL recovery of every position and token class, teacher-forced along the base traces (the
    sequential ones at the largest budget that have probe files: their token ids are stored there).
    Probe files that cannot be read are left out and listed in `damaged`."""
    import torch

    from layerprobe.probe.lens import kl_logprobs
    from layerprobe.probe.restore import gated_logprobs

    damaged = damaged if damaged is not None else []

    budgets = run.budgets()
    traces = [
        r
        for r in run.samples
        if r.variant == run.base
        and r.mode == "sequential"
        and budgets
        and r.budget == budgets[-1]
        and inside(run.dir, r.layers_file)
    ]
    if not traces:
        return []
    prompt_of = prompts(run, base.tokenizer)
    names = list(POSITION_CLASSES + TOKEN_CLASSES)
    kl_sum = np.zeros((len(traces), len(names)))
    counts = np.zeros((len(traces), len(names)))
    tok = base.tokenizer
    for ti, r in enumerate(traces):
        if progress:
            progress(f"explain {variant}: restoration (teacher-forced)", ti, len(traces))
        assert r.layers_file is not None  # selected above
        try:
            trace = load_trace_tokens(run.dir / r.layers_file)
        except DamagedFile:
            damaged.append(r.layers_file)
            continue
        if prompt_of(r) is None or len(trace) < 2:
            continue
        prompt = tok.encode(prompt_of(r), add_special_tokens=False)
        texts, full = decoded(tok, trace)
        masks = class_masks(len(trace), r.thinking_tokens, token_classes(texts, reflection_spans(full)))
        seq = prompt + trace[:-1]
        P, T = len(prompt), len(trace)
        # gate at input position i: prompt positions closed except for "all"; trace token n sits at P + n
        gates = torch.zeros((len(names), len(seq)))
        for j, name in enumerate(names):
            if name == "all":
                gates[j] = 1.0
            else:
                gates[j, P:] = torch.from_numpy(masks[name][: T - 1].astype(np.float32))
        keep = slice(P - 1, P - 1 + T)
        lp = gated_logprobs(base, dropped, seq, gates, keep)  # (classes, T, V)
        kl = (
            kl_logprobs(lp[names.index("all")].unsqueeze(0).expand_as(lp).reshape(-1, lp.shape[-1]), lp.reshape(-1, lp.shape[-1]))
            .reshape(len(names), T)
            .cpu()
            .numpy()
        )
        kl_sum[ti] = kl.sum(axis=1)
        for j, name in enumerate(names):
            counts[ti, j] = masks[name].sum()
    if progress:
        progress(f"explain {variant}: restoration (teacher-forced)", len(traces), len(traces))
    pruned = kl_sum[:, names.index("none")]
    total_tokens = counts[:, names.index("all")].sum()
    out = []
    for j, name in enumerate(names):
        rec = Restoration(
            variant=variant,
            positions=name,
            share_of_tokens=float(counts[:, j].sum() / total_tokens) if total_tokens else None,
            n_traces=len(traces),
        )
        if pruned.sum() > 1e-9:  # recovery of nothing is undefined, not 0 or 1
            rec.kl_recovery = 1.0 - float(kl_sum[:, j].sum() / pruned.sum())
            rec.kl_ci = _ratio_ci(kl_sum[:, j], pruned)
        out.append(rec)
    return out


def restoration_accuracy(
    run: Run,
    base: Any,
    variant: str,
    dropped: Sequence[int],
    records: list[Restoration],
    limit: int | None,
    progress: ProgressFn | None = None,
    done: dict[str, list[float]] | None = None,
    on_class: Callable[[str, list[float]], None] | None = None,
) -> None:
    """Accuracy recovery of the token classes (and all / none) in free greedy generation on the run's
    long-chain problems, filled into `records`. `done` holds the classes generated before (a resumed
    explain); `on_class(name, correct)` is told each class as it finishes (so it can be kept)."""
    import torch

    from layerprobe.data.reader import LONG
    from layerprobe.probe.restore import gated_layers
    from layerprobe.scaling.engine import GenRequest, TraceGenerator
    from layerprobe.scaling.formats import FORMATS, Sampling, detect_format
    from layerprobe.tasks.grading import gold_problem, grade_trace

    if run.info.origin == "ingest" and run.info.config.reasoning_format not in FORMATS:
        raise Skip(
            f"accuracy recovery for {variant}: free generation needs a reasoning format (s1 or think-tags); "
            f"the traces were read as {run.info.config.reasoning_format or 'unknown'}"
        )
    fmt = detect_format(base.tokenizer, run.info.config.reasoning_format)
    tok = base.tokenizer
    answer_type = run.info.task.answer_type
    prompt_of = prompts(run, tok)
    firsts: dict[str, SampleRecord] = {}
    for r in run.samples:  # the problems the base model answered, with the prompt each was given
        if r.variant == run.base and r.problem_id not in firsts and prompt_of(r) is not None:
            firsts[r.problem_id] = r
    long = [
        (pid, open_thinking(prompt_of(r) or "", fmt), r.gold)
        for pid, r in firsts.items()
        if run.regime(r.group or "all") == LONG and gold_problem(answer_type, r.gold) is None
    ]
    long = long[:limit] if limit else long
    if not long:
        raise Skip(
            f"accuracy recovery for {variant}: the task has no long-chain problems (free generation is run on long chains only)"
        )
    budget = max(run.budgets()) if run.budgets() else run.info.config.parallel_budget
    reqs = [
        GenRequest(key=pid, prompt=prompt, budget=budget, answer_max=run.info.config.answer_max or 64) for pid, prompt, _ in long
    ]
    vocab_class = vocab_classes(tok, int(base.model.get_output_embeddings().weight.shape[0]))
    gen = TraceGenerator(base.model, tok, fmt, Sampling(temperature=0.0))
    state = {"prefill": True}

    class Phase:  # tells the gate function whether a forward pass is the prompt's
        def on_forward(self, keys: Any, mask: Any, prefill: bool) -> None:
            state["prefill"] = prefill

        def on_tokens(self, *a: Any) -> None:
            pass

        def on_finish(self, *a: Any) -> None:
            pass

    correct: dict[str, np.ndarray] = {k: np.array(v, float) for k, v in (done or {}).items() if len(v) == len(long)}
    wanted = ("all", "none") + TOKEN_CLASSES
    for ci, name in enumerate(wanted):
        if name in correct:
            continue
        if progress:
            progress(f"explain {variant}: restoration (generation)", ci, len(wanted))
        table = torch.tensor([1.0 if name == "all" or (name != "none" and c == name) else 0.0 for c in vocab_class])

        def gates(ids: torch.Tensor, table: torch.Tensor = table, name: str = name) -> torch.Tensor:
            if state["prefill"]:
                return torch.full(ids.shape, 1.0 if name == "all" else 0.0)
            return table[ids.cpu()]

        with gated_layers(base, dropped, gates):
            res = gen.generate(reqs, batch_size=16, observers=[Phase()])
        correct[name] = np.array(
            [grade_trace(answer_type, gold, r.answer_text, r.thinking_text).correct for (_, _, gold), r in zip(long, res)],
            float,
        )
        if on_class is not None:
            on_class(name, correct[name].tolist())
    if progress:
        progress(f"explain {variant}: restoration (generation)", len(wanted), len(wanted))
    fill_accuracy(records, correct)


def fill_accuracy(records: list[Restoration], correct: dict[str, np.ndarray]) -> None:
    """Accuracy recovery of each class from per-problem greedy outcomes (class -> (problems,) 0/1,
    with "all" the base model and "none" the pruned one): of the problems the pruning lost (right
    with every layer, wrong without), the share the class brings back, with its Wilson interval,
    which stays honest at a handful of problems (6 of 6 -> [61, 100] %); and the problems the pruned
    model solved that the class gets wrong."""
    from layerprobe.metrics.paired import proportion_interval

    lost = (correct["all"] == 1) & (correct["none"] == 0)
    kept = correct["none"] == 1
    for rec in records:
        if rec.positions not in correct:
            continue
        mine = correct[rec.positions]
        rec.accuracy = float(mine.mean())
        rec.n_lost = int(lost.sum())
        rec.n_regained = int((lost & (mine == 1)).sum())
        rec.n_broken = int((kept & (mine == 0)).sum())
        if rec.n_lost:
            rec.accuracy_recovery = rec.n_regained / rec.n_lost
            rec.ci = proportion_interval(rec.n_regained, rec.n_lost)


def open_thinking(prompt: str, fmt: Any) -> str:
    """A prompt that ends with the format's thinking opener (an ingested prompt may leave it to the model)."""
    return prompt if prompt.rstrip().endswith(fmt.prompt_suffix.strip()) else prompt + fmt.prompt_suffix
