"""Sentences from measured numbers. Every sentence carries the numbers behind it (as Nums with
their source path into metrics.json or layers/<variant>.json); a difference is only called a drop
or a rise when the stored paired comparison says so ("higher"/"lower"); otherwise it is called
inside the noise. Nothing here computes a statistic: the numbers are read from the run's files."""

from __future__ import annotations

from typing import Any

from layerprobe.data.labels import layers_words
from layerprobe.data.reader import ALL, Run
from layerprobe.data.schema import Comparison
from layerprobe.data.summarize import TRACE_METRICS
from layerprobe.data.verdicts import verdict_note, verdict_short, verdict_words
from layerprobe.report.numbers import Num, Sentence, is_num

HIGHER, LOWER = "higher", "lower"
#: Number kind of each behaviour metric.
TRACE_KIND = {
    "loop": "p",
    "seq_rep": "p",
    "self_bleu_within": "f1",
    "self_bleu_within_study": "f1",
    "reflections_per_1k": "f1",
    "thinking_tokens": "f1",
    "budget_exhausted": "p",
    "answer_missing": "p",
    "truncated": "p",
}


def comparison_index(run: Run) -> dict[tuple[str, str, str, int], int]:
    return {(c.variant, c.group, c.mode, -1 if c.budget is None else c.budget): i for i, c in enumerate(run.metrics.comparisons)}


def tone(verdict: str) -> str:
    """List-marker style: outside the noise (either direction) or inside it; no good/bad colouring."""
    return "clear" if verdict in (LOWER, HIGHER) else "noise"


def _cmp_parts(c: Comparison, src: tuple[Any, ...], kind: str = "p") -> list[Any]:
    dkind = {"p": "d", "f1": "d1", "f3": "d3"}.get(kind, kind)
    unit = " points" if dkind == "d" else ""
    parts: list[Any] = [
        " (difference ",
        Num(c.diff, dkind, src + ("diff",)),
        f"{unit}, 95 % CI ",
        Num(c.ci_low, dkind, src + ("ci_low",)),
        " to ",
        Num(c.ci_high, dkind, src + ("ci_high",)),
        f"{unit}, ",
        Num(c.n_pairs, "i", src + ("n_pairs",)),
        " problems paired): ",
        verdict_words(c),
        ".",
    ]
    return parts


def _diff_with_interval(c: Comparison, src: tuple[Any, ...], unit: str = "") -> list[Any]:
    """'−40 points [−69, −4]': a stored accuracy difference in points and its 95 % interval."""
    return [
        Num(c.diff, "d", src + ("diff",)),
        f"{unit} [",
        Num(c.ci_low, "d", src + ("ci_low",)),
        ", ",
        Num(c.ci_high, "d", src + ("ci_high",)),
        "]",
    ]


def _group_name(run: Run, g: str) -> str:
    return f"{run.group_title(g)} problems" if g != ALL else "all problems"


def what_broke(run: Run) -> list[Sentence]:
    """Per pruned variant, one sentence: the change in accuracy of every problem group at the largest
    thinking budget (points, 95 % interval), long chains first, said as a drop or a rise only where the
    stored paired comparison says so."""
    budgets = run.budgets()
    if not budgets:
        return []
    idx = comparison_index(run)
    comps = run.metrics.comparisons
    groups = run.groups() or [ALL]
    out = []
    for v in run.pruned:
        spec = run.spec(v)
        who = f"Without {layers_words(spec.dropped)} ({v})" if spec is not None and spec.dropped else f"{v} against {run.base}"
        parts: list[Any] = [f"{who}, at {budgets[-1]} thinking tokens: "]
        clear = False
        for g in groups:
            i = idx.get((v, g, "sequential", budgets[-1]))
            if i is None:
                continue
            c = comps[i]
            src = ("metrics", "comparisons", i)
            if len(parts) > 1:
                parts.append(", ")
            clear |= c.verdict in (LOWER, HIGHER)
            note = verdict_note(c)
            parts += [
                f"{run.group_title(g) if g != ALL else 'all problems'} ",
                *_diff_with_interval(c, src, " points"),
                f" ({note})" if note else "",
            ]
        if len(parts) > 1:
            parts.append(".")
            out.append(Sentence(*parts, tone="clear" if clear else "noise"))
    return out


def variant_sentences(run: Run, v: str) -> list[Sentence]:
    """The narrative for one variant against the base."""
    base = run.base
    idx = comparison_index(run)
    comps = run.metrics.comparisons
    groups = run.groups() or [ALL]
    out: list[Sentence] = []
    budgets = run.budgets()
    health = run.metrics.grading
    broken = [name for name in (base, v) if name in health and not health[name].meaningful]
    for name in broken:  # first: accuracy that measures the grader, not the model
        h = health[name]
        out.append(
            Sentence(
                "Accuracy is not meaningful: ",
                Num(h.missing_rate, "pct", ("metrics", "grading", name, "missing_rate")),
                f" of {name}'s traces had no answer the grader could find, so every accuracy below counts them "
                "as wrong (docs/grading.md lists the extraction rules).",
                tone="clear",
            )
        )
    # 0. overview: which paired accuracy comparisons are outside the noise
    mine = [(i, c) for i, c in enumerate(comps) if c.variant == v]
    if mine:
        clear = [(i, c) for i, c in mine if c.verdict in (LOWER, HIGHER)]
        parts: list[Any] = [f"Of {len(mine)} paired accuracy comparisons with {base} (group \u00d7 mode \u00d7 budget), "]
        if not clear:
            parts.append("none is outside the noise.")
        else:
            parts.append(f"{len(clear)} {'is' if len(clear) == 1 else 'are'} outside the noise: ")
            order = {g: k for k, g in enumerate(groups)}
            shown = sorted(
                clear, key=lambda t: (order.get(t[1].group, len(order)), t[1].mode != "sequential", -(t[1].budget or 0))
            )[:6]
            for j, (ix, c) in enumerate(shown):
                if j:
                    parts.append("; ")
                what = "sequential" if c.mode == "sequential" else "parallel samples"
                parts += [
                    f"{c.group} {what} at {c.budget} tokens ",
                    Num(c.diff, "d", ("metrics", "comparisons", ix, "diff")),
                    " points",
                ]
            parts.append(f" and {len(clear) - len(shown)} more." if len(clear) > len(shown) else ".")
        # each test runs at the 5 % level and the comparisons overlap (the "all" group contains the others)
        parts.append(
            f" With no real difference, about {0.05 * len(mine):.1f} of {len(mine)} tests at the 5 % level "
            "would come out this way by chance."
        )
        out.append(Sentence(*parts, tone="clear" if clear else "noise"))
    # 1. sequential scaling at the largest budget, long-chain group
    if budgets:
        bmax = budgets[-1]
        i = idx.get((v, groups[0], "sequential", bmax))
        if i is not None:
            c = comps[i]
            src = ("metrics", "comparisons", i)
            out.append(
                Sentence(
                    f"On {_group_name(run, groups[0])} at the largest thinking budget ({bmax} tokens), accuracy was ",
                    Num(c.mean_a, "p", src + ("mean_a",)),
                    f" for {base} and ",
                    Num(c.mean_b, "p", src + ("mean_b",)),
                    f" for {v}",
                    *_cmp_parts(c, src),
                    tone=tone(c.verdict),
                )
            )
        # 2. what more thinking bought each variant
        g = groups[0]
        seqs = {var: run.vmetrics(var, g).sequential for var in (base, v)}
        ends = [seqs[var].get(str(b)) for var in (base, v) for b in (budgets[0], bmax)]
        if len(budgets) > 1 and all(e is not None and is_num(e.accuracy) for e in ends):
            parts = [f"From {budgets[0]} to {bmax} thinking tokens on {_group_name(run, g)}, accuracy went "]
            for j, var in enumerate((base, v)):
                pre: tuple[str, ...] = ("metrics", "variants", var, "groups", g, "sequential")
                parts += [
                    Num(seqs[var][str(budgets[0])].accuracy, "p", pre + (str(budgets[0]), "accuracy")),
                    " \u2192 ",
                    Num(seqs[var][str(bmax)].accuracy, "p", pre + (str(bmax), "accuracy")),
                    f" for {var}",
                ]
                parts.append(" and " if j == 0 else " (sequential scaling; the intervals are in the plots below).")
            out.append(Sentence(*parts))
    # 3. parallel scaling
    g = groups[0]
    pa, pb = run.vmetrics(base, g).parallel, run.vmetrics(v, g).parallel
    ks = [k for k in pa.k if k in pb.k]
    if ks and str(ks[-1]) in pa.pass_at_k and str(ks[-1]) in pb.pass_at_k:
        k = ks[-1]
        pre_a = ("metrics", "variants", base, "groups", g, "parallel")
        pre_b = ("metrics", "variants", v, "groups", g, "parallel")
        parts = [
            f"With {k} parallel samples per problem on {_group_name(run, g)}, pass@{k} was ",
            Num(pa.pass_at_k[str(k)].value, "p", pre_a + ("pass_at_k", str(k), "value")),
            f" for {base} and ",
            Num(pb.pass_at_k[str(k)].value, "p", pre_b + ("pass_at_k", str(k), "value")),
            f" for {v}; maj@{k} ",
            Num(pa.maj_at_k[str(k)].value, "p", pre_a + ("maj_at_k", str(k), "value")),
            " vs ",
            Num(pb.maj_at_k[str(k)].value, "p", pre_b + ("maj_at_k", str(k), "value")),
        ]
        keys = [key for key in idx if key[0] == v and key[1] == g and key[2] == "parallel"]
        i = idx[max(keys, key=lambda key: key[3])] if keys else None  # at the parallel budget, the largest
        if i is not None:
            c = comps[i]
            src = ("metrics", "comparisons", i)
            parts += [
                "; single-sample accuracy averaged over the samples ",
                Num(c.mean_a, "p", src + ("mean_a",)),
                " vs ",
                Num(c.mean_b, "p", src + ("mean_b",)),
                *_cmp_parts(c, src),
            ]
            out.append(Sentence(*parts, tone=tone(c.verdict)))
        else:
            out.append(Sentence(*parts, "."))
    # 4. long-chain against the controls
    if budgets and len(groups) > 1:
        bmax = budgets[-1]
        parts = [f"Long-chain against the controls, change in accuracy at {bmax} tokens ({v} minus {base}, in points): "]
        first = True
        for g in groups:
            i = idx.get((v, g, "sequential", bmax))
            if i is None:
                continue
            c = comps[i]
            if not first:
                parts.append("; ")
            first = False
            src = ("metrics", "comparisons", i)
            parts += [f"{run.group_title(g)} ", *_diff_with_interval(c, src), f" ({verdict_short(c)})"]
        if not first:
            parts.append(".")
            out.append(Sentence(*parts))
    # 5. trace behaviour (stored paired comparisons)
    for i, c in enumerate(run.metrics.behaviour_comparisons):
        if c.variant != v or not c.n_pairs or c.metric == "answer_missing":
            continue
        label, kind = TRACE_METRICS[c.metric][0], TRACE_KIND.get(c.metric, "f3")
        src = ("metrics", "behaviour_comparisons", i)
        out.append(
            Sentence(
                f"{label[0].upper()}{label[1:]}: ",
                Num(c.mean_a, kind, src + ("mean_a",)),
                f" for {base} vs ",
                Num(c.mean_b, kind, src + ("mean_b",)),
                f" for {v}",
                *_cmp_parts(c, src, kind),
                tone=tone(c.verdict),
            )
        )
    # 6. per-layer signals (aggregates over all traces: no interval)
    la, lb = run.layers.get(base), run.layers.get(v)
    if lb is not None and lb.teacher_forced is not None:
        tf = lb.teacher_forced
        pre = ("layers", v, "teacher_forced")
        parts = [
            f"Teacher-forced over {base}'s own traces, {v}'s next-token distribution diverged by a mean KL of ",
            Num(tf.mean_kl, "s", pre + ("mean_kl",)),
            " nats",
        ]
        rel = tf.kl_by_relpos
        vals = [(j, x) for j, x in enumerate(rel) if is_num(x)]
        if len(vals) > 1 and is_num(tf.peak_position):
            j, x = max(vals, key=lambda t: t[1])
            parts += [
                "; it was largest at ",
                Num(tf.peak_position, "pct", pre + ("peak_position",)),
                " of the way through the trace (",
                Num(x, "s", pre + ("kl_by_relpos", j)),
                " nats) against ",
                Num(vals[0][1], "s", pre + ("kl_by_relpos", vals[0][0])),
                " at the start",
            ]
        if tf.n_traces:
            parts += [
                "; a sustained divergence set in on ",
                Num(tf.n_onset, "i", pre + ("n_onset",)),
                " of ",
                Num(tf.n_traces, "i", pre + ("n_traces",)),
                " traces",
            ]
            if is_num(tf.onset_fraction_mean):
                parts += [
                    ", on average ",
                    Num(tf.onset_fraction_mean, "pct", pre + ("onset_fraction_mean",)),
                    " of the way through",
                ]
        out.append(Sentence(*parts, " (an aggregate over traces, no interval)."))
    if la is not None and lb is not None and la.settling is not None and lb.settling is not None:
        sa, sb = la.settling, lb.settling
        if is_num(sa.mean_depth_fraction) and is_num(sb.mean_depth_fraction):
            out.append(
                Sentence(
                    "Settling depth (first layer whose logit-lens JSD to the model's own output falls to g = ",
                    Num(sa.g, "f3", ("layers", base, "settling", "g")),
                    " nats), as a share of each model's depth: ",
                    Num(sa.mean_depth_fraction, "p", ("layers", base, "settling", "mean_depth_fraction")),
                    f" for {base} vs ",
                    Num(sb.mean_depth_fraction, "p", ("layers", v, "settling", "mean_depth_fraction")),
                    f" for {v}; deep-thinking ratio ",
                    Num(sa.deep_thinking_ratio, "p", ("layers", base, "settling", "deep_thinking_ratio")),
                    " vs ",
                    Num(sb.deep_thinking_ratio, "p", ("layers", v, "settling", "deep_thinking_ratio")),
                    " (aggregates, no interval; each model is measured against its own output, so a model whose output "
                    "has collapsed can look settled early).",
                )
            )
    if la is not None and lb is not None:
        bi_a = {l: x for l, x in zip(la.layers, la.per_layer.block_influence) if is_num(x)}
        bi_b = {l: x for l, x in zip(lb.layers, lb.per_layer.block_influence) if is_num(x)}
        common = [l for l in bi_a if l in bi_b]
        if common:
            l = max(common, key=lambda l: abs(bi_b[l] - bi_a[l]))
            ja, jb = la.layers.index(l), lb.layers.index(l)
            spec = run.spec(v)
            out.append(
                Sentence(
                    f"Block influence moved most at original layer {l}: ",
                    Num(bi_a[l], "s", ("layers", base, "per_layer", "block_influence", ja)),
                    f" in {base}, ",
                    Num(bi_b[l], "s", ("layers", v, "per_layer", "block_influence", jb)),
                    f" in {v}",
                    f" (layers dropped in {v}: {', '.join(map(str, spec.dropped if spec else [])) or 'none'}).",
                )
            )
    return out


def resolve(run: Run, src: list[Any]) -> Any:
    """The value a Num's source path points at (for checks)."""
    from layerprobe.report.numbers import lookup

    head, rest = src[0], src[1:]
    if head == "metrics":
        return lookup(run.metrics, rest)
    if head == "layers":
        return lookup(run.layers, rest)
    if head in run.extras or head.endswith(".json"):
        return lookup(run.extras.get(head), rest)
    return None


PREDICTOR_WORDS = {
    "block_influence": "block influence on the calibration text (ShortGPT's criterion)",
    "block_influence_traces": "block influence on the model's own traces",
    "teacher_forced_kl": "the teacher-forced KL (the proxy that needs no generation)",
}


def sweep_sentences(run: Run, sweep: Any) -> list[Sentence]:
    """One sentence per group and predictor: does it predict the damage of removing a layer?"""
    out: list[Sentence] = []
    for field in ("bi_vs_damage", "proxy_vs_damage"):
        for i, c in enumerate(getattr(sweep, field)):
            if c.group == ALL or c.predictor == "block_influence_traces":
                continue
            src = ("sweep.json", field, i)
            what = (
                "block influence and the damage" if c.predictor == "block_influence" else "the teacher-forced KL and the damage"
            )
            parts: list[Any] = [f"{what[0].upper()}{what[1:]} on {run.group_title(c.group)}, over {c.n} variants: "]
            if c.spearman is None:
                parts.append("no correlation can be computed (one side does not vary).")
                out.append(Sentence(*parts, tone="noise"))
                continue
            parts += [
                "Spearman ",
                Num(c.spearman, "r", src + ("spearman",)),
                " [",
                Num(c.ci[0], "r", src + ("ci", 0)),
                ", ",
                Num(c.ci[1], "r", src + ("ci", 1)),
                "], permutation p = ",
                Num(c.p_value, "f3", src + ("p_value",)),
                ": ",
            ]
            if c.established:
                direction = "layers it rates higher lose more" if c.spearman > 0 else "layers it rates lower lose more"
                parts.append(f"{PREDICTOR_WORDS[c.predictor]} predicts the damage ({direction}).")
            else:
                parts.append(f"not established: {PREDICTOR_WORDS[c.predictor]} does not clearly predict the damage here.")
            out.append(Sentence(*parts, tone="clear" if c.established else "noise"))
    return out
