"""`layerprobe explain`: why a pruned variant fails, from interventions and predictions (docs/explain.md).

Reads a run directory (finished or partial), needs the model again (for the interventions), and
writes RUN/explain.json:

- restoration: the removed layers put back, gated per position class, teacher-forced along the base
  traces (KL recovery) and, for token classes, in free greedy generation on long chains (accuracy
  recovery);
- breaks: where failing pruned traces part from the base trace; for the toy, the first wrong step;
- compounding (toy): per-step error rate and the fit accuracy(k) = (1 - epsilon)^k;
- predictors: which measured signals announce a wrong answer (scikit-learn, grouped cross-validation);
- findings: the strongest of these, outside the noise, as ranked sentences for the report.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from layerprobe._io import check_can_write
from layerprobe.data.lock import check_free
from layerprobe.data.reader import Run, load_run
from layerprobe.data.schema import (
    Breaks,
    Compounding,
    ExplainFile,
    ExplainState,
    Finding,
    PredictorFeature,
    Predictors,
    Restoration,
    SampleRecord,
    teacher_forced_file,
)
from layerprobe.data.store import now, write_model
from layerprobe.errors import UserError
from layerprobe.jobs.job import Job, ProgressFn, settings_differences
from layerprobe.metrics.paired import MIN_UNITS
from layerprobe.probe.store import DamagedFile, load_trace_layers, load_trace_tokens
from layerprobe.rules import inside

EXPLAIN_FILE = "explain.json"
POSITION_CLASSES = (
    "all",
    "none",
    "thinking",
    "answer",
    "first-25%",
    "rest-75%",
    "first-50%",
    "rest-50%",
    "first-75%",
    "rest-25%",
    "answer-start",
)
TOKEN_CLASSES = ("numbers", "equals", "operations", "boundaries", "reflection", "other")
"""Token classes, as narrow as the text allows: '=' (where a step's result is written) apart from the
operations (+5, *3, the symbols), numbers, step boundaries, reflection words (data.labels says each in words)."""
ANSWER_START = 4
"""The answer's first tokens ("answer-start"): where the answer is committed to."""
_NUMBER = re.compile(r"^\s*[-+]?\d[\d.,]*\s*$")
_EQUALS = re.compile(r"^\s*(?:=|==|≈|:=)\s*$")
_OPERATION = re.compile(r"^\s*(?:[-+*/×÷^<>]|[-+*/×÷^]\d+)\s*$")
_BOUNDARY = re.compile(r"\n|^\s*(?:s\d+|[.!?;:])\s*$")
N_BOOT = 2000


# ------------------------------------------------------------------------------------ position classes


def token_classes(token_texts: Sequence[str], reflection_spans: Sequence[tuple[int, int]]) -> list[str]:
    """The token class of each token (TOKEN_CLASSES): by its decoded text; a token that overlaps a
    reflection-lexicon match in the decoded trace is reflection."""
    out, pos = [], 0
    for text in token_texts:
        a, b = pos, pos + len(text)
        pos = b
        if any(s < b and a < e for s, e in reflection_spans):
            out.append("reflection")
        elif _EQUALS.match(text):
            out.append("equals")
        elif _OPERATION.match(text):  # before numbers: the toy's "+5" is an operation, not a signed number
            out.append("operations")
        elif _NUMBER.match(text):
            out.append("numbers")
        elif _BOUNDARY.search(text):
            out.append("boundaries")
        else:
            out.append("other")
    return out


def class_masks(n_tokens: int, thinking_tokens: int, classes: Sequence[str]) -> dict[str, np.ndarray]:
    """(n_tokens,) bool masks of every position and token class over a trace's tokens. Position
    classes split the thinking tokens by their relative position (first x % of the thinking)."""
    idx = np.arange(n_tokens)
    think = idx < thinking_tokens
    frac = idx / max(1, thinking_tokens)
    masks = {"all": np.ones(n_tokens, bool), "none": np.zeros(n_tokens, bool), "thinking": think, "answer": ~think}
    for x in (25, 50, 75):
        masks[f"first-{x}%"] = think & (frac < x / 100)
        masks[f"rest-{100 - x}%"] = think & (frac >= x / 100)
    masks["answer-start"] = ~think & (idx < thinking_tokens + ANSWER_START)
    cls = np.asarray(classes)
    for c in TOKEN_CLASSES:
        masks[c] = cls == c
    return masks


def _decoded(tokenizer: Any, ids: Sequence[int]) -> tuple[list[str], str]:
    texts = [tokenizer.decode([i], skip_special_tokens=False) for i in ids]
    return texts, "".join(texts)


def _reflection_spans(text: str) -> list[tuple[int, int]]:
    from layerprobe.metrics.reflection import _patterns, resolve_lexicon

    return [m.span() for p in _patterns(resolve_lexicon(None)) for m in p.finditer(text)]


# ------------------------------------------------------------------------------------------ restoration


def _ratio_ci(num: np.ndarray, den: np.ndarray, seed: int = 0) -> tuple[float, float]:
    """Bootstrap interval of 1 - sum(num) / sum(den), resampling the rows (traces or problems)."""
    rng = np.random.default_rng(seed)
    n = num.shape[0]
    vals = []
    for _ in range(N_BOOT):
        i = rng.integers(0, n, n)
        d = den[i].sum()
        if d > 0:
            vals.append(1.0 - num[i].sum() / d)
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
    question = {p.id: p.question for p in _problems(run)}
    return lambda r: build_prompt(tokenizer, fmt, question[r.problem_id]) if r.problem_id in question else None


def _problems(run: Run) -> list[Any]:
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
        texts, full = _decoded(tok, trace)
        masks = class_masks(len(trace), r.thinking_tokens, token_classes(texts, _reflection_spans(full)))
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
        raise _Skip(
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
        (pid, _open_thinking(prompt_of(r) or "", fmt), r.gold)
        for pid, r in firsts.items()
        if run.regime(r.group or "all") == LONG and gold_problem(answer_type, r.gold) is None
    ]
    long = long[:limit] if limit else long
    if not long:
        raise _Skip(
            f"accuracy recovery for {variant}: the task has no long-chain problems (free generation is run on long chains only)"
        )
    budget = max(run.budgets()) if run.budgets() else run.info.config.parallel_budget
    reqs = [
        GenRequest(key=pid, prompt=prompt, budget=budget, answer_max=run.info.config.answer_max or 64) for pid, prompt, _ in long
    ]
    vocab_class = _vocab_classes(tok, int(base.model.get_output_embeddings().weight.shape[0]))
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


def _open_thinking(prompt: str, fmt: Any) -> str:
    """A prompt that ends with the format's thinking opener (an ingested prompt may leave it to the model)."""
    return prompt if prompt.rstrip().endswith(fmt.prompt_suffix.strip()) else prompt + fmt.prompt_suffix


def _vocab_classes(tokenizer: Any, n_rows: int) -> list[str]:
    """The token class of each of the model's n_rows output ids, by its text alone (reflection words
    by the first word of each lexicon entry); ids beyond the tokenizer's (padding rows of the
    embedding, which a damaged model can still emit) are "other"."""
    from layerprobe.metrics.reflection import resolve_lexicon

    first_words = {e.split()[0].lower() for e in resolve_lexicon(None)}
    out = []
    for i in range(len(tokenizer)):
        text = tokenizer.decode([i], skip_special_tokens=False)
        if text.strip().lower() in first_words:
            out.append("reflection")
        else:
            out.append(token_classes([text], [])[0])
    return out + ["other"] * max(0, n_rows - len(out))


# ---------------------------------------------------------------------------------------- breaks


def breaks(run: Run) -> list[Breaks]:
    """Per pruned variant: where its failing traces part from the base trace (teacher-forced first
    departure), and for toy chains the first step written wrong."""
    from layerprobe.toy.evaluate import first_wrong_step

    budgets = run.budgets()
    if not budgets:
        return []
    out = []
    for v in run.pruned:
        la = run.layers.get(v)
        points = {t.file: t for t in (la.teacher_forced.traces if la is not None and la.teacher_forced is not None else [])}
        failing = [
            r for r in run.samples if r.variant == v and r.mode == "sequential" and r.budget == budgets[-1] and r.correct is False
        ]
        fracs: list[float] = []
        steps: list[int] = []
        for r in failing:
            pt = points.get(r.tf_file or teacher_forced_file(r.variant, r.problem_id, r.mode, r.budget, r.sample))
            if pt is not None and pt.n_tokens and pt.first_departure is not None:
                fracs.append(pt.first_departure / pt.n_tokens)
            if run.info.task.answer_type == "digit":
                steps.append(first_wrong_step(r.thinking_text))
        out.append(
            Breaks(
                variant=v,
                n_failing=len(failing),
                first_departure_fraction=list[float | None](fracs),
                median_fraction=float(statistics.median(fracs)) if fracs else None,
                median_ci=_median_ci(fracs),
                first_wrong_step=steps,
            )
        )
    return out


def _median_ci(xs: Sequence[float], seed: int = 0) -> tuple[float | None, float | None]:
    """95 % bootstrap interval of the median (None, None below 5 values)."""
    if len(xs) < 5:
        return None, None
    a = np.asarray(xs, float)
    rng = np.random.default_rng(seed)
    meds = np.median(a[rng.integers(0, len(a), (N_BOOT, len(a)))], axis=1)
    lo, hi = np.quantile(meds, [0.025, 0.975])
    return float(lo), float(hi)


# ------------------------------------------------------------------------------------ compounding


def _fit_epsilon(ks: np.ndarray, ok: np.ndarray) -> float:
    """Maximum-likelihood epsilon of P(correct | k) = (1 - epsilon)^k (golden-section on [0, 1))."""

    def nll(e: float) -> float:
        p = np.clip((1.0 - e) ** ks, 1e-12, 1 - 1e-12)
        return float(-(ok * np.log(p) + (1 - ok) * np.log(1 - p)).sum())

    lo, hi = 0.0, 0.999
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    for _ in range(80):
        if nll(a) < nll(b):
            hi, b = b, a
            a = hi - g * (hi - lo)
        else:
            lo, a = a, b
            b = lo + g * (hi - lo)
    return (lo + hi) / 2


def compounding(run: Run) -> list[Compounding]:
    """Toy chains: per variant, the per-step error rate read from its traces and the fit
    accuracy(k) = (1 - epsilon)^k over chain lengths, with a likelihood-ratio test of the fit."""
    from scipy.stats import chi2

    from layerprobe.metrics.paired import proportion_interval
    from layerprobe.tasks.registry import TASKS
    from layerprobe.toy.evaluate import audit_trace

    if run.info.task.answer_type != "digit" or not run.budgets() or not run.info.task.name.startswith("toy-"):
        return []
    if run.info.task.name not in TASKS:
        return []
    steps = {p.id: int(p.meta.get("steps", 0)) for p in _problems(run)}
    out = []
    for spec in run.variants:
        recs = [
            r
            for r in run.samples
            if r.variant == spec.name
            and r.mode == "sequential"
            and r.budget == run.budgets()[-1]
            and steps.get(r.problem_id, 0) > 0
            and r.correct is not None
        ]
        if len(recs) < 3:
            continue
        ks = np.array([steps[r.problem_id] for r in recs], float)
        ok = np.array([r.correct for r in recs], float)
        audits = [audit_trace(r.thinking_text) for r in recs]
        n_steps = sum(a.steps for a in audits)
        eps = _fit_epsilon(ks, ok)
        rng = np.random.default_rng(0)
        boots = [_fit_epsilon(ks[i], ok[i]) for i in (rng.integers(0, len(ks), len(ks)) for _ in range(300))]
        by_k: dict[str, tuple[int, int]] = {}
        for k in sorted(set(ks.astype(int).tolist())):
            sel = ks == k
            by_k[str(k)] = (int(ok[sel].sum()), int(sel.sum()))

        # likelihood ratio: one epsilon for all k against a free accuracy per k
        def ll(p: np.ndarray, y: np.ndarray) -> float:
            p = np.clip(p, 1e-12, 1 - 1e-12)
            return float((y * np.log(p) + (1 - y) * np.log(1 - p)).sum())

        free = np.array([by_k[str(int(k))][0] / by_k[str(int(k))][1] for k in ks])
        stat = 2 * (ll(free, ok) - ll((1 - eps) ** ks, ok))
        dof = max(1, len(by_k) - 1)
        out.append(
            Compounding(
                variant=spec.name,
                step_error_rate=sum(a.step_errors for a in audits) / n_steps if n_steps else None,
                epsilon=eps,
                epsilon_ci=(float(np.quantile(boots, 0.025)), float(np.quantile(boots, 0.975))),
                by_k=by_k,
                by_k_ci={k: proportion_interval(c, n) for k, (c, n) in by_k.items()},
                predicted={k: (1 - eps) ** int(k) for k in by_k},
                fit_p=float(chi2.sf(max(0.0, stat), dof)),
            )
        )
    return out


# ------------------------------------------------------------------------------------- predictors

FEATURES = (
    "thinking_tokens",
    "budget_exhausted",
    "loop",
    "seq_rep",
    "self_bleu_within",
    "reflections_per_1k",
    "lens_entropy",
    "settling_depth",
    "deep_thinking_ratio",
    "tf_kl_mean",
    "tf_kl_max",
    "tf_onset_fraction",
)


def trace_features(run: Run, damaged: list[str] | None = None) -> tuple[list[SampleRecord], np.ndarray]:
    """One row of FEATURES per graded generated trace (copies left out); NaN where a feature does not
    exist, or where its file cannot be read (listed in `damaged`)."""
    damaged = damaged if damaged is not None else []
    from layerprobe.metrics import budget_exhausted
    from layerprobe.probe.settle import G_DEFAULT, RHO_DEFAULT, deep_thinking, settling_depth

    tf_points: dict[str, Any] = {}
    for v in run.pruned:
        la = run.layers.get(v)
        if la is not None and la.teacher_forced is not None:
            tf_points.update({t.file: t for t in la.teacher_forced.traces})
    recs = [r for r in run.samples if r.origin != "copy" and r.correct is not None]
    rows = []
    for r in recs:
        f = dict.fromkeys(FEATURES, math.nan)
        f["thinking_tokens"] = r.thinking_tokens
        f["budget_exhausted"] = float(budget_exhausted(r))
        f["loop"] = float(r.repetition.loop)
        f["seq_rep"] = r.repetition.seq_rep_4 if r.repetition.seq_rep_4 is not None else math.nan
        f["self_bleu_within"] = r.self_bleu_within if r.self_bleu_within is not None else math.nan
        f["reflections_per_1k"] = r.reflections.per_1k if r.reflections.per_1k is not None else math.nan
        tl = None
        if inside(run.dir, r.layers_file):
            try:
                tl = load_trace_layers(run.dir / str(r.layers_file))
            except DamagedFile:
                damaged.append(str(r.layers_file))
        if tl is not None:
            if tl.lens != "none" and tl.n_tokens:
                with np.errstate(all="ignore"):
                    f["lens_entropy"] = float(np.nanmean(tl.entropy[:, -1]))
                    c = settling_depth(tl.jsd, G_DEFAULT)
                    c = c[c >= 0]
                    if c.size:
                        f["settling_depth"] = float(np.mean((c + 1) / tl.n_layers))
                        f["deep_thinking_ratio"] = float(np.mean(deep_thinking(c, tl.n_layers, RHO_DEFAULT)))
        pt = tf_points.get(r.tf_file or teacher_forced_file(r.variant, r.problem_id, r.mode, r.budget, r.sample))
        tf = None
        if pt is not None and inside(run.dir, pt.file):
            from layerprobe.probe.teacher import load_teacher_forced

            try:
                tf = load_teacher_forced(run.dir / pt.file)
            except DamagedFile:
                damaged.append(pt.file)
        if tf is not None:
            if tf.n_tokens:
                f["tf_kl_mean"], f["tf_kl_max"] = float(np.mean(tf.kl)), float(np.max(tf.kl))
                f["tf_onset_fraction"] = (tf.onset / tf.n_tokens) if tf.onset is not None else 1.0
        elif r.variant == run.base and any(run.layers.get(v) is not None for v in run.pruned):
            f["tf_kl_mean"] = f["tf_kl_max"] = 0.0  # the base model against itself
            f["tf_onset_fraction"] = 1.0
        rows.append([f[k] for k in FEATURES])
    return recs, np.asarray(rows, dtype=np.float64).reshape(len(recs), len(FEATURES))


def _oof(
    X: np.ndarray, y: np.ndarray, groups: np.ndarray, make: Callable[[], Any], importances: bool = False
) -> tuple[np.ndarray, np.ndarray | None]:
    """Out-of-fold predicted probabilities (grouped K-fold), and permutation importances (held-out AUC
    drop per feature, averaged over folds) when asked."""
    from sklearn.inspection import permutation_importance
    from sklearn.model_selection import GroupKFold

    n_groups = len(set(groups.tolist()))
    folds = GroupKFold(n_splits=min(5, n_groups))
    prob = np.full(len(y), math.nan)
    imp = np.zeros(X.shape[1]) if importances else None
    n_imp = 0
    for train, test in folds.split(X, y, groups):
        if len(set(y[train].tolist())) < 2:
            continue
        model = make().fit(X[train], y[train])
        prob[test] = model.predict_proba(X[test])[:, 1]
        if imp is not None and len(set(y[test].tolist())) == 2:
            r = permutation_importance(model, X[test], y[test], scoring="roc_auc", n_repeats=3, random_state=0)
            imp += r.importances_mean
            n_imp += 1
    return prob, (imp / n_imp if imp is not None and n_imp else imp)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """Area under the ROC curve of scores `p` for 0/1 labels `y` (1 = positive): the Mann-Whitney
    statistic with ties at half weight, the value sklearn's roc_auc_score gives, without its input
    validation (which costs a thousand times the arithmetic in a bootstrap of thousands)."""
    from scipy.stats import rankdata

    pos = y == 1
    n1 = int(pos.sum())
    n0 = len(y) - n1
    if not n1 or not n0:
        return math.nan
    return float((rankdata(p)[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def _auc_boot(
    y: np.ndarray, p: np.ndarray, q: np.ndarray | None, groups: np.ndarray, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Bootstrap AUCs (and AUC(p) - AUC(q) when q is given), resampling problems."""
    rng = np.random.default_rng(seed)
    uniq = np.array(sorted(set(groups.tolist())))
    index = {g: np.flatnonzero(groups == g) for g in uniq}
    aucs, diffs = [], []
    for _ in range(N_BOOT):
        pick = np.concatenate([index[g] for g in rng.choice(uniq, len(uniq))])
        if len(set(y[pick].tolist())) < 2:
            continue
        a = auc(y[pick], p[pick])
        aucs.append(a)
        if q is not None:
            diffs.append(a - auc(y[pick], q[pick]))
    return np.asarray(aucs), np.asarray(diffs)


PREDICTOR_MIN_EACH = 8
"""Fewest wrong and fewest right traces the failure predictors are fitted on."""


class _Skip(Exception):
    """A part of explain that does not apply to this run; the message says why."""


def predictors(run: Run, min_each: int = PREDICTOR_MIN_EACH, damaged: list[str] | None = None) -> Predictors | str:
    """Cross-validated (grouped by problem) prediction of wrong answers from the trace features, with
    logistic regression and gradient boosting (the better one is kept), against thinking length alone;
    or, when there are too few wrong or right traces to cross-validate, the reason."""
    recs, X = trace_features(run, damaged)
    y = np.array([0 if r.correct else 1 for r in recs], int)
    n_wrong = int(y.sum())
    if n_wrong < min_each or len(y) - n_wrong < min_each:
        return (
            f"failure predictors: {n_wrong} wrong and {len(y) - n_wrong} right traces; cross-validation needs at least "
            f"{min_each} of each"
        )
    groups = np.array([r.problem_id for r in recs])
    return fit_predictors(X, y, groups, list(FEATURES))


def fit_predictors(X: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str]) -> Predictors:
    """The predictor study on a feature matrix (exposed for tests with known signal or pure noise)."""
    from threadpoolctl import threadpool_limits

    # a few hundred rows: thread pools only add overhead (and stall on a busy machine)
    with threadpool_limits(limits=1):
        return _fit_predictors(X, y, groups, names)


def _fit_predictors(X: np.ndarray, y: np.ndarray, groups: np.ndarray, names: list[str]) -> Predictors:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score, roc_curve
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    usable = [j for j in range(X.shape[1]) if np.isfinite(X[:, j]).any() and np.nanstd(X[:, j]) > 0]
    Xu = X[:, usable]
    makers = {
        "logistic regression": lambda: make_pipeline(
            SimpleImputer(strategy="median"), StandardScaler(), LogisticRegression(max_iter=2000)
        ),
        "gradient boosting": lambda: HistGradientBoostingClassifier(max_iter=100, max_depth=3, random_state=0),
    }
    best: tuple[str, float, np.ndarray, np.ndarray | None] | None = None
    for name, make in makers.items():
        prob, _ = _oof(Xu, y, groups, make)
        ok = np.isfinite(prob)
        if ok.sum() < 4 or len(set(y[ok].tolist())) < 2:
            continue
        auc = roc_auc_score(y[ok], prob[ok])
        if best is None or auc > best[1]:
            best = (name, auc, prob, None)
    if best is not None:  # importances of the kept model only
        _, imp = _oof(Xu, y, groups, makers[best[0]], importances=True)
        best = (best[0], best[1], best[2], imp)
    length_col = names.index("thinking_tokens") if "thinking_tokens" in names else 0
    base_prob, _ = _oof(X[:, [length_col]], y, groups, makers["logistic regression"])
    out = Predictors(n_traces=len(y), n_incorrect=int(y.sum()))
    if best is None:
        return out
    name, auc, prob, imp = best
    ok = np.isfinite(prob) & np.isfinite(base_prob)
    aucs, diffs = _auc_boot(y[ok], prob[ok], base_prob[ok], groups[ok])
    base_aucs, _ = _auc_boot(y[ok], base_prob[ok], None, groups[ok])
    out.model, out.auc = name, float(roc_auc_score(y[ok], prob[ok]))
    out.baseline_auc = float(roc_auc_score(y[ok], base_prob[ok]))
    q = lambda a: (float(np.quantile(a, 0.025)), float(np.quantile(a, 0.975))) if a.size else (math.nan, math.nan)
    out.auc_ci, out.baseline_ci, out.gain_ci = q(aucs), q(base_aucs), q(diffs)
    out.gain = out.auc - out.baseline_auc
    out.established = bool(diffs.size) and out.gain_ci[0] > 0
    if imp is not None:
        feats = [PredictorFeature(name=names[j], importance=float(imp[k])) for k, j in enumerate(usable)]
        out.features = sorted(feats, key=lambda f: -(f.importance or 0.0))
    fpr, tpr, _ = roc_curve(y[ok], prob[ok])
    bfpr, btpr, _ = roc_curve(y[ok], base_prob[ok])
    out.roc = {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "baseline_fpr": bfpr.tolist(), "baseline_tpr": btpr.tolist()}
    return out


# --------------------------------------------------------------------------------------- findings


def _strength(effect: float | None, ci: tuple[float | None, float | None]) -> float | None:
    if effect is None or ci[0] is None or ci[1] is None or not all(map(math.isfinite, (effect, ci[0], ci[1]))):
        return None
    half = (ci[1] - ci[0]) / 2
    return abs(effect) / half if half > 0 else math.inf


def _outside(ci: tuple[float | None, float | None], n: int | None = None) -> bool:
    """Whether an effect is clear by the difference rule (metrics.decide): its interval excludes 0 and,
    where the number of problems it rests on is known (`n`), there are at least MIN_UNITS of them."""
    from layerprobe.metrics.paired import HIGHER, LOWER, MIN_UNITS, decide

    lo, hi = ci
    if lo is None or hi is None:
        return False
    return decide(lo, hi, MIN_UNITS if n is None else n)[0] in (HIGHER, LOWER)


def _pct(x: float | None) -> str:
    return "?" if x is None or not math.isfinite(x) else f"{100 * x:.0f}"


def _pct_ci(ci: tuple[float | None, float | None]) -> str:
    return f"[{_pct(ci[0])}, {_pct(ci[1])}]"


KINDS = ("restoration-tokens", "restoration-positions", "compounding", "breaks", "predictors", "sweep")
"""The order findings are listed in: what the removed layers do where, then how the failure unfolds."""
MAX_FINDINGS = 10


def findings(run: Run, ex: ExplainFile, top: int = MAX_FINDINGS) -> list[Finding]:
    """The mechanisms behind the pruned variants' failures, one sentence each, said in words (data.labels)
    with the interval of every number: per variant the token class and the part of the trace where
    restoring the removed layers brings back the most (accuracy recovery and KL recovery both compete),
    how errors compound with chain length, where failing chains part from the base model; for the run,
    what predicts a failure and what the sweep shows. Only evidence whose 95 % interval excludes zero
    is a finding (where chains break is a location, reported with its interval)."""
    from layerprobe.data.labels import feature_words, layers_words, position_words

    out: list[Finding] = []
    specs = {v.name: v for v in run.variants}
    budget = max(run.budgets()) if run.budgets() else run.info.config.parallel_budget
    at = f" at {budget} thinking tokens" if budget else ""

    def who(v: str) -> str:
        spec = specs.get(v)
        return f"{layers_words(spec.dropped)} ({v})" if spec is not None and spec.dropped else v

    for v in run.pruned:
        recs = [
            r for r in ex.restoration if r.variant == v and r.positions not in ("all", "none") and (r.share_of_tokens or 0) > 0
        ]
        tokens = [r for r in recs if r.positions in TOKEN_CLASSES and (r.share_of_tokens or 1) <= 0.5]
        by_acc = [r for r in tokens if r.accuracy_recovery is not None and _outside(r.ci, r.n_lost)]
        by_kl = [r for r in tokens if r.kl_recovery is not None and _outside(r.kl_ci, r.n_traces)]
        chosen: list[Restoration] = []
        if by_acc:
            chosen.append(max(by_acc, key=lambda r: (r.accuracy_recovery or 0, r.kl_recovery or 0)))
        if by_kl:
            best_kl = max(by_kl, key=lambda r: r.kl_recovery or 0)
            if not chosen or best_kl.positions != chosen[0].positions:
                chosen.append(best_kl)
        for r in chosen:
            out.append(_restoration_finding(r, who(v), position_words(r.positions), "restoration-tokens", budget))
        spans = [r for r in recs if r.positions not in TOKEN_CLASSES and r.positions != "thinking"]
        spans = [
            r for r in spans if (r.share_of_tokens or 1) <= 0.5 and r.kl_recovery is not None and _outside(r.kl_ci, r.n_traces)
        ]
        if spans:
            r = max(spans, key=lambda r: r.kl_recovery or 0)
            out.append(_restoration_finding(r, who(v), position_words(r.positions), "restoration-positions", budget))
    base_comp = next((c for c in ex.compounding if c.variant == run.base), None)
    for comp in ex.compounding:
        if comp.variant == run.base or comp.epsilon is None or base_comp is None or base_comp.epsilon is None:
            continue
        if comp.epsilon > 0.95 or all(c <= 0.15 * n for c, n in comp.by_k.values()):
            continue  # at chance on every length: a chain-length fit says nothing
        lo = (comp.epsilon_ci[0] or 0) - (base_comp.epsilon_ci[1] or 0)
        hi = (comp.epsilon_ci[1] or 0) - (base_comp.epsilon_ci[0] or 0)
        if not (lo > 0 or hi < 0):
            continue
        ks = sorted(int(k) for k in comp.by_k)
        short, long = ks[0], ks[-1]
        n = sum(n for _, n in comp.by_k.values())
        fit = "" if (comp.fit_p or 0) >= 0.05 else ", though the fit misses some chain lengths"
        how = ""
        if comp.step_error_rate is not None:
            wrong = f"{100 * comp.step_error_rate:.0f} % of the steps it writes are wrong"
            if comp.step_error_rate >= comp.epsilon / 2:
                how = f"; {wrong}: errors compound step by step"
            else:
                how = f"; yet only {wrong}, so its chains fail otherwise than by a wrong step (loops, stopping, no answer)"
        out.append(
            Finding(
                text=f"Without {who(comp.variant)}, accuracy falls with chain length as (1 \u2212 \u03b5)^k with "
                f"\u03b5 = {comp.epsilon:.2f} [{comp.epsilon_ci[0]:.2f}, {comp.epsilon_ci[1]:.2f}] per step (base model "
                f"{base_comp.epsilon:.2f}): {_pct((1 - comp.epsilon) ** short)} % at {short} step{'s' if short != 1 else ''}, "
                f"{_pct((1 - comp.epsilon) ** long)} % at {long} (fit p = {comp.fit_p:.2f}, over {n} chains: the sequential traces"
                f"{at}{fit}){how}.",
                effect=comp.epsilon - base_comp.epsilon,
                ci=(lo, hi),
                section="why-compounding",
                kind="compounding",
                variant=comp.variant,
                n=n,
            )
        )
    for b in ex.breaks:
        fr = [x for x in b.first_departure_fraction if x is not None]
        if b.median_fraction is None or b.median_ci[0] is None or len(fr) < MIN_UNITS:
            continue
        steps = [s for s in b.first_wrong_step if s > 0]
        step = (
            f"; the first wrong step it writes is step {statistics.median(steps):.0f} (median of {len(steps)} traces with one)"
            if len(steps) >= MIN_UNITS
            else ""
        )
        out.append(
            Finding(
                text=f"Failing chains leave the base model's path early: of the {b.n_failing or len(fr)} sequential "
                f"traces{at} that fail without {who(b.variant)}, {len(fr)} part from the base trace, half of them by "
                f"{_pct(b.median_fraction)} % {_pct_ci(b.median_ci)} of the way{step}.",
                effect=b.median_fraction,
                ci=b.median_ci,
                section="why-breaks",
                kind="breaks",
                variant=b.variant,
                n=len(fr),
            )
        )
    p = ex.predictors
    if p is not None and p.gain is not None and p.established:
        names = ", ".join(feature_words(f.name) for f in p.features[:3])
        out.append(
            Finding(
                text=f"A wrong answer is announced by what the trace looks like: its measured signals predict it with AUC "
                f"{p.auc:.2f} [{p.auc_ci[0]:.2f}, {p.auc_ci[1]:.2f}], against {p.baseline_auc:.2f} for thinking length alone "
                f"({p.model}, cross-validated by problem over the {p.n_traces} graded traces of every variant, "
                f"{p.n_incorrect} of them wrong; most useful: {names}).",
                effect=p.gain,
                ci=p.gain_ci,
                section="why-predictors",
                kind="predictors",
            )
        )
    sweep = run.extras.get("sweep.json")
    if sweep is not None:
        for c in sweep.bi_vs_damage:
            if c.predictor == "block_influence" and c.group != "all" and c.established and c.spearman is not None:
                out.append(
                    Finding(
                        text=f"Across the sweep, block influence {'predicts' if c.spearman > 0 else 'runs against'} the damage on "
                        f"{run.group_title(c.group)}: Spearman {c.spearman:+.2f} [{c.ci[0]:+.2f}, {c.ci[1]:+.2f}].",
                        effect=c.spearman,
                        ci=c.ci,
                        section="sweep",
                        kind="sweep",
                    )
                )
    for f in out:
        f.strength = _strength(f.effect, f.ci)
    kept = [f for f in out if f.effect is not None and (f.kind == "breaks" or _outside(f.ci, f.n))]
    order = {v: i for i, v in enumerate(run.pruned)}
    return sorted(kept, key=lambda f: (KINDS.index(f.kind), order.get(f.variant or "", -1)))[:top]


def _restoration_finding(r: Restoration, who: str, where: str, kind: str, budget: int | None = None) -> Finding:
    """A restoration result in words: where, how much of the trace, the divergence and the accuracy it brings
    back. The accuracy counts come from greedy generation (jobs.explain.restoration_accuracy), not from the
    run's sampled traces, and the sentence says so where the counts are."""
    parts = []
    if r.kl_recovery is not None and _outside(r.kl_ci, r.n_traces):
        parts.append(
            f"{_pct(r.kl_recovery)} % {_pct_ci(r.kl_ci)} of the divergence from the base model along its traces"
            + (f" at {budget} thinking tokens" if budget else "")
        )
    if r.accuracy_recovery is not None and r.n_lost and _outside(r.ci, r.n_lost):
        broken = f", losing {r.n_broken} it had solved" if r.n_broken else ""
        at = f" at {budget} thinking tokens" if budget else ""
        parts.append(
            f"{r.n_regained} of the {r.n_lost} long-chain problems the pruning loses in greedy generation{at} "
            f"({_pct(r.accuracy_recovery)} % {_pct_ci(r.ci)}{', few problems' if r.n_lost < 10 else ''}{broken}; greedy "
            "decoding, not the sampled traces behind the accuracy tables)"
        )
    by_accuracy = r.accuracy_recovery is not None and _outside(r.ci, r.n_lost) and r.n_lost
    return Finding(
        text=f"Restoring {who} only at {where} \u2014 {_pct(r.share_of_tokens)} % of the trace \u2014 brings back "
        f"{' and '.join(parts)}.",
        effect=r.accuracy_recovery if by_accuracy else r.kl_recovery,
        ci=r.ci if by_accuracy else r.kl_ci,
        section="why-restoration",
        kind=kind,
        variant=r.variant,
        n=r.n_lost if by_accuracy else r.n_traces,
    )


# ------------------------------------------------------------------------------------------- run


STATE_DIR = ".explain"
STATE_FILE = "state.json"
#: Settings that do not change what explain computes: a re-run that differs only in them resumes.
MAY_DIFFER = frozenset({"device", "dtype"})


def run_fingerprint(run: Run) -> str:
    """What an explanation depends on in a run: its variants and the keys of its traces (an analyze that
    added traces since makes the parts computed before stale)."""
    import hashlib

    h = hashlib.sha1(json.dumps({v.name: v.dropped for v in run.variants}, sort_keys=True).encode())
    for key in sorted(r.key() for r in run.samples):
        h.update(repr(key).encode())
    return h.hexdigest()


def explain_settings(
    generation: bool = True, limit: int | None = None, device: str = "auto", dtype: str | None = None
) -> dict[str, Any]:
    """What an explanation was asked for, and by which layerprobe (stored in .explain/state.json; MAY_DIFFER may
    change on a resume; another version computes afresh, so its findings are worded by the code that shows them)."""
    from layerprobe._version import __version__

    return {
        "generation": generation,
        "limit": limit,
        "device": device,
        "dtype": dtype,
        "classes": list(TOKEN_CLASSES),
        "layerprobe": __version__,
    }


def explain_is_current(run_dir: str | Path, **settings: Any) -> bool:
    """Whether RUN/explain.json is the finished explanation of the run as it is now, with these settings
    (explain_settings): the last explain completed, over the same variants and traces, its settings
    differing at most in MAY_DIFFER, and explain.json readable. Then computing it again gives the same file."""
    run_dir = Path(run_dir)
    try:
        state = ExplainState.model_validate_json((run_dir / STATE_DIR / STATE_FILE).read_bytes())
    except (OSError, ValueError):
        return False
    if state.status != "complete" or settings_differences(state.settings, explain_settings(**settings), MAY_DIFFER):
        return False
    try:
        run = load_run(run_dir)
    except UserError:
        return False
    return EXPLAIN_FILE in run.extras and state.run == run_fingerprint(run)


class Explain(Job):
    """Why the pruned variants fail (the job skeleton: prepare, then open / work / close with the run's
    lock held: no other job writes the run while explain works on it). Its expensive parts (restoration of each variant,
    teacher-forced and in generation, class by class) are kept in RUN/.explain/state.json as they
    finish, so a stopped explain resumes where it was; explain.json is written at the end."""

    kind = "explain"

    def __init__(
        self,
        run_dir: str | Path,
        *,
        generation: bool = True,
        limit: int | None = None,
        device: str = "auto",
        dtype: str | None = None,
        progress: ProgressFn | None = None,
        argv: Sequence[str] = (),
    ) -> None:
        super().__init__(progress, argv)
        self.out = Path(run_dir)
        self.generation, self.limit, self.device, self.dtype = generation, limit, device, dtype
        self.settings = explain_settings(generation, limit, device, dtype)

    def resume_command(self) -> list[str]:
        return list(self.argv)  # the run directory is its argument, not an --out

    def busy_message(self, who: str) -> str:
        return f"{self.out} is being written by {who}; explain it when that ends"

    def prepare(self) -> None:
        from layerprobe.jobs.execute import set_threads_for
        from layerprobe.models.loading import load_model

        check_free(self.out, self.kind, self.busy_message)  # before the model is loaded: refused at once
        run = self.run_read = load_run(self.out)
        check_can_write(self.out, "the run directory")
        if not run.pruned:
            raise UserError(f"{run.dir} has no pruned variant: nothing to explain (run analyze with --drop or --method)")
        if not any(r.variant == run.base and inside(run.dir, r.layers_file) for r in run.samples):
            raise UserError(
                f"{run.dir} has no probe files for {run.base}'s traces: explain needs their token ids "
                f"(run {'ingest' if run.info.origin == 'ingest' else 'analyze'} without --no-probes)"
            )
        t0 = time.perf_counter()
        self.base = load_model(run.info.config.model, device=self.device, dtype=self.dtype or run.info.config.dtype)
        set_threads_for(self.base)
        self.load_seconds = time.perf_counter() - t0

    def open(self) -> None:
        """Resume the parts an earlier explain of this run with these settings computed, else start afresh."""
        path = self.out / STATE_DIR / STATE_FILE
        fingerprint = run_fingerprint(self.run_read)
        if run_fingerprint(load_run(self.out, extras=False)) != fingerprint:  # written between prepare and the lock
            raise UserError(f"{self.out} changed while explain was loading the model (another job wrote it); run explain again")
        old = None
        if path.is_file():
            try:
                old = ExplainState.model_validate_json(path.read_bytes())
            except (OSError, ValueError):
                old = None  # a damaged state file: the parts are computed again
        fresh = old is None or old.run != fingerprint or settings_differences(old.settings, self.settings, MAY_DIFFER)
        self.state = ExplainState(settings=self.settings, run=fingerprint, created=now()) if fresh or old is None else old
        self.state.settings, self.state.command, self.state.resume_command = self.settings, self.argv, self.resume_command()
        self._save("running")

    def _save(self, status: str | None = None) -> None:
        if status is not None:
            self.state.status = status  # type: ignore[assignment]
        self.state.updated = now()
        write_model(self.out / STATE_DIR / STATE_FILE, self.state)

    def work(self) -> ExplainFile:
        run, base, st = self.run_read, self.base, self.state
        damaged = st.damaged
        ex = ExplainFile(computed=now(), variants={v.name: v.dropped for v in run.variants})
        timings = dict(st.timings)
        timings["load"] = round(timings.get("load", 0.0) + self.load_seconds, 2)
        for v in run.pruned:
            spec = run.spec(v)
            if spec is not None and not spec.dropped:  # width and sparse variants keep every layer
                kind = spec.compression.kind if spec.compression is not None else "no layer removed"
                ex.skipped.append(
                    f"restoration for {v}: it removes no layer ({kind}), and causal restoration switches removed layers "
                    "back on, so it does not apply"
                )
                continue
            if spec is None or spec.checkpoint is not None:  # restoration needs the removed layers inside the base model
                ex.skipped.append(f"restoration for {v}: a checkpoint variant, whose weights are not the base model's")
                continue
            if v not in st.restoration:
                t0 = time.perf_counter()
                st.restoration[v] = restoration_kl(run, base, v, spec.dropped, self.progress, damaged)
                timings[f"restoration {v} (teacher-forced)"] = round(time.perf_counter() - t0, 2)
                st.timings = timings
                self._save()
            recs = [r.model_copy(deep=True) for r in st.restoration[v]]
            if self.generation and recs:
                t0 = time.perf_counter()

                def keep(name: str, correct: list[float], v: str = v) -> None:
                    st.accuracy.setdefault(v, {})[name] = correct
                    self._save()

                try:
                    restoration_accuracy(run, base, v, spec.dropped, recs, self.limit, self.progress, st.accuracy.get(v), keep)
                except _Skip as why:
                    ex.skipped.append(str(why))
                timings[f"restoration {v} (generation)"] = round(
                    timings.get(f"restoration {v} (generation)", 0.0) + time.perf_counter() - t0, 2
                )
            elif not self.generation:
                ex.skipped.append(f"accuracy recovery for {v}: --no-generation")
            elif not recs:
                ex.skipped.append(f"restoration for {v}: no base traces to teacher-force along")
            ex.restoration += recs
        t0 = time.perf_counter()
        ex.breaks = breaks(run)
        ex.compounding = compounding(run)
        timings["breaks and compounding"] = round(time.perf_counter() - t0, 2)
        t0 = time.perf_counter()
        fitted = predictors(run, damaged=damaged)
        if isinstance(fitted, str):
            ex.skipped.append(fitted)
        else:
            ex.predictors = fitted
        timings["predictors"] = round(time.perf_counter() - t0, 2)
        ex.findings = findings(run, ex)
        if damaged:
            ex.skipped.append(f"{len(set(damaged))} probe or teacher-forced files could not be read (damaged) and were left out")
        ex.timings = timings
        write_model(run.dir / EXPLAIN_FILE, ex)
        from layerprobe.jobs.compression import write_compression

        write_compression(run.dir)  # the matched-size comparison gains the explanation's numbers
        return ex

    def close(self, status: str) -> None:
        if hasattr(self, "state"):
            self._save(status)


def explain(run_dir: str | Path, **kw: Any) -> ExplainFile:
    """Compute and write RUN/explain.json (the Explain job); returns it. UserError when the run cannot be
    explained."""
    result: ExplainFile = Explain(run_dir, **kw).run()
    return result
