"""Sentences from measured numbers. Every sentence carries the numbers behind it (as Nums with
their source path); a difference is only called a drop or a rise when the paired comparison of
layerprobe.metrics says so ("higher"/"lower"); otherwise it is called inside the noise."""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

from layerprobe.metrics import HIGHER, LOWER, paired_comparison
from layerprobe.report.load import ALL, RunData
from layerprobe.report.numbers import Num, Sentence, is_num

# Per-trace quantities compared base vs pruned, problem by problem (mean over a problem's traces).
TRACE_METRICS: dict[str, tuple[str, str]] = {
    # key: (label, number kind)
    "loop": ("share of traces that end in a loop", "p"),
    "seq_rep": ("seq-rep-4 (share of repeated 4-grams)", "p"),
    "self_bleu_within": ("within-trace Self-BLEU (0-100, repetition inside one trace)", "f1"),
    "reflections_per_1k": ("reflection words per 1k thinking tokens", "f1"),
    "thinking_tokens": ("thinking tokens", "f1"),
    "budget_exhausted": ("share of traces that used up the thinking budget", "p"),
    "answer_missing": ("share of traces with no extractable answer", "p"),
}


def _trace_value(rec: Any, key: str) -> float | None:
    rep = rec.repetition or {}
    if key == "loop":
        return float(bool(rep.get("loop")))
    if key == "seq_rep":
        k = next((k for k in rep if k.startswith("seq_rep_")), None)
        return rep.get(k) if k else None
    if key == "self_bleu_within":
        return rec.self_bleu_within
    if key == "reflections_per_1k":
        return (rec.reflections or {}).get("per_1k")
    if key == "thinking_tokens":
        return float(rec.thinking_tokens)
    if key == "budget_exhausted":
        hit = getattr(rec, "budget_hit", None)
        return float(hit if hit is not None else (rec.finish == "budget" or rec.thinking_tokens >= rec.budget))
    if key == "answer_missing":
        return float(rec.answer is None or not str(rec.answer).strip())
    return None


def derive(run: RunData, n_boot: int = 2000) -> dict[str, Any]:
    """Numbers the report computes itself from the samples: paired base-vs-pruned comparisons of
    trace behaviour (per problem: the mean over that problem's traces), with the verdicts of
    layerprobe.metrics.paired_comparison."""
    out: dict[str, Any] = {"trace_cmp": {}}
    by: dict[tuple[str, str], dict[tuple, Any]] = defaultdict(dict)
    for s in run.samples:  # per variant and problem: its traces by (mode, budget, sample)
        by[(s.variant, s.problem_id)][(s.mode, s.budget, s.sample)] = s
    for v in run.pruned:
        out["trace_cmp"][v] = {}
        for key in TRACE_METRICS:
            a, b = [], []
            for (var, pid), recs in by.items():
                if var != run.base or (v, pid) not in by:
                    continue
                mine = by[(v, pid)]
                both = [k for k in recs if k in mine]  # the same traces on both sides (partial runs)
                va = [x for x in (_trace_value(recs[k], key) for k in both) if is_num(x)]
                vb = [x for x in (_trace_value(mine[k], key) for k in both) if is_num(x)]
                if va and vb:
                    a.append(statistics.fmean(va))
                    b.append(statistics.fmean(vb))
            if not a:
                continue
            c = paired_comparison(a, b, n_boot=n_boot, n_perm=n_boot).as_dict()
            out["trace_cmp"][v][key] = c
        rel = (((run.layers.get(v) or {}).get("teacher_forced") or {}).get("kl_by_relpos")) or []
        vals = [(j, x) for j, x in enumerate(rel) if is_num(x)]
        if len(vals) > 1:  # centre of the relative-position bin where the KL peaks
            j, _ = max(vals, key=lambda t: t[1])
            out.setdefault("tf_peak", {})[v] = (j + 0.5) / len(rel)
    return out


def comparison_index(run: RunData) -> dict[tuple[str, str, str, int], int]:
    idx = {}
    for i, c in enumerate(run.metrics.get("comparisons", [])):
        idx[(c.get("variant"), c.get("group"), c.get("mode"), int(c.get("budget", -1)))] = i
    return idx


def verdict_words(verdict: str) -> str:
    if verdict == LOWER:
        return "lower, outside the noise"
    if verdict == HIGHER:
        return "higher, outside the noise"
    return "inside the noise (no clear difference)"


def tone(verdict: str) -> str:
    """List-marker style: outside the noise (either direction) or inside it; no good/bad colouring."""
    return "clear" if verdict in (LOWER, HIGHER) else "noise"


def _cmp_parts(c: dict[str, Any], src: tuple[Any, ...], kind: str = "p") -> list[Any]:
    dkind = {"p": "d", "f1": "d1", "f3": "d3"}.get(kind, kind)
    return [" (difference ", Num(c.get("diff"), dkind, src + ("diff",)), ", 95 % CI ",
            Num(c.get("ci_low"), dkind, src + ("ci_low",)), " to ", Num(c.get("ci_high"), dkind, src + ("ci_high",)),
            ", ", Num(c.get("n_pairs"), "i", src + ("n_pairs",)), " problems paired): ",
            verdict_words(c.get("verdict", "")), "."]


def _group_name(run: RunData, g: str) -> str:
    return f"{run.group_title(g)} problems" if g != ALL else "all problems"


def variant_sentences(run: RunData, v: str, derived: dict[str, Any]) -> list[Sentence]:
    """The narrative for one pruned variant against the base."""
    base = run.base
    idx = comparison_index(run)
    comps = run.metrics.get("comparisons", [])
    groups = run.groups() or [ALL]
    out: list[Sentence] = []
    budgets = run.budgets()
    # 0. overview: which paired accuracy comparisons are outside the noise
    mine = [(i, c) for i, c in enumerate(comps) if c.get("variant") == v]
    if mine:
        clear = [(i, c) for i, c in mine if c.get("verdict") in (LOWER, HIGHER)]
        parts: list[Any] = [f"Of {len(mine)} paired accuracy comparisons with {base} (group \u00d7 mode \u00d7 budget), "]
        if not clear:
            parts.append("none is outside the noise.")
        else:
            parts.append(f"{len(clear)} {'is' if len(clear) == 1 else 'are'} outside the noise: ")
            order = {g: k for k, g in enumerate(groups)}
            shown = sorted(clear, key=lambda t: (order.get(t[1].get("group"), len(order)), t[1].get("mode") != "sequential",
                                                 -t[1].get("budget", 0)))[:6]
            for j, (i, c) in enumerate(shown):
                if j:
                    parts.append("; ")
                what = "sequential" if c.get("mode") == "sequential" else "parallel samples"
                parts += [f"{c.get('group')} {what} at {c.get('budget')} tokens ", Num(c.get("diff"), "d", ("metrics", "comparisons", i, "diff"))]
            parts.append(f" and {len(clear) - len(shown)} more." if len(clear) > len(shown) else ".")
        # each test runs at the 5 % level and the comparisons overlap (the "all" group contains the others)
        parts.append(f" With no real difference, about {0.05 * len(mine):.1f} of {len(mine)} tests at the 5 % level "
                     "would come out this way by chance.")
        out.append(Sentence(*parts, tone="clear" if clear else "noise"))
    # 1. sequential scaling at the largest budget, per group
    if budgets:
        bmax = budgets[-1]
        for g in groups[:1]:  # the first (long-chain) group; the others follow in the controls sentence
            i = idx.get((v, g, "sequential", bmax))
            if i is None:
                continue
            c = comps[i]
            src = ("metrics", "comparisons", i)
            out.append(Sentence(
                f"On {_group_name(run, g)} at the largest thinking budget ({bmax} tokens), accuracy was ",
                Num(c.get("mean_a"), "p", src + ("mean_a",)), f" for {base} and ",
                Num(c.get("mean_b"), "p", src + ("mean_b",)), f" for {v}", *_cmp_parts(c, src),
                tone=tone(c.get("verdict", ""))))
        # 2. what more thinking bought each variant
        g = groups[0]
        ends = [run.vmetrics(var, g).get("sequential", {}).get(str(b), {}).get("accuracy")
                for var in (base, v) for b in (budgets[0], bmax)]
        if len(budgets) > 1 and all(is_num(x) for x in ends):
            parts: list[Any] = [f"From {budgets[0]} to {bmax} thinking tokens on {_group_name(run, g)}, accuracy went "]
            for j, var in enumerate((base, v)):
                sq = run.vmetrics(var, g).get("sequential", {})
                lo, hi = sq.get(str(budgets[0]), {}).get("accuracy"), sq.get(str(bmax), {}).get("accuracy")
                pre = ("metrics", "variants", var, "groups", g, "sequential")
                parts += [Num(lo, "p", pre + (str(budgets[0]), "accuracy")), " \u2192 ",
                          Num(hi, "p", pre + (str(bmax), "accuracy")), f" for {var}"]
                parts.append(" and " if j == 0 else " (sequential scaling; the intervals are in the plots below).")
            out.append(Sentence(*parts))
    # 3. parallel scaling
    for g in groups[:1]:
        pa, pb = run.vmetrics(base, g).get("parallel", {}), run.vmetrics(v, g).get("parallel", {})
        ks = [k for k in pa.get("k", []) if k in pb.get("k", [])]
        if not ks:
            continue
        k = ks[-1]
        pre_a = ("metrics", "variants", base, "groups", g, "parallel")
        pre_b = ("metrics", "variants", v, "groups", g, "parallel")
        parts = [f"With {k} parallel samples per problem on {_group_name(run, g)}, pass@{k} was ",
                 Num(pa["pass_at_k"][str(k)]["value"], "p", pre_a + ("pass_at_k", str(k), "value")), f" for {base} and ",
                 Num(pb["pass_at_k"][str(k)]["value"], "p", pre_b + ("pass_at_k", str(k), "value")), f" for {v}; maj@{k} ",
                 Num(pa["maj_at_k"][str(k)]["value"], "p", pre_a + ("maj_at_k", str(k), "value")), " vs ",
                 Num(pb["maj_at_k"][str(k)]["value"], "p", pre_b + ("maj_at_k", str(k), "value"))]
        i = next((idx[key] for key in idx if key[0] == v and key[1] == g and key[2] == "parallel"), None)
        if i is not None:
            c = comps[i]
            src = ("metrics", "comparisons", i)
            parts += ["; single-sample accuracy averaged over the samples ", Num(c.get("mean_a"), "p", src + ("mean_a",)),
                      " vs ", Num(c.get("mean_b"), "p", src + ("mean_b",)), *_cmp_parts(c, src)]
            out.append(Sentence(*parts, tone=tone(c.get("verdict", ""))))
        else:
            out.append(Sentence(*parts, "."))
    # 4. long-chain against the controls
    if budgets and len(groups) > 1:
        bmax = budgets[-1]
        parts = [f"Long-chain against the controls, change in accuracy at {bmax} tokens ({v} minus {base}): "]
        first = True
        for g in groups:
            i = idx.get((v, g, "sequential", bmax))
            if i is None:
                continue
            c = comps[i]
            if not first:
                parts.append("; ")
            first = False
            parts += [f"{run.group_title(g)} ", Num(c.get("diff"), "d", ("metrics", "comparisons", i, "diff")), " [",
                      Num(c.get("ci_low"), "d", ("metrics", "comparisons", i, "ci_low")), ", ",
                      Num(c.get("ci_high"), "d", ("metrics", "comparisons", i, "ci_high")),
                      f"] ({'inside the noise' if c.get('verdict') not in (LOWER, HIGHER) else c.get('verdict')})"]
        if not first:
            parts.append(".")
            out.append(Sentence(*parts))
    # 5. trace behaviour (derived paired comparisons)
    tc = derived.get("trace_cmp", {}).get(v, {})
    for key in ("loop", "seq_rep", "self_bleu_within", "reflections_per_1k", "thinking_tokens", "budget_exhausted"):
        c = tc.get(key)
        if not c or not c.get("n_pairs"):
            continue
        label, kind = TRACE_METRICS[key]
        src = ("derived", "trace_cmp", v, key)
        out.append(Sentence(
            f"{label[0].upper()}{label[1:]}: ", Num(c.get("mean_a"), kind, src + ("mean_a",)), f" for {base} vs ",
            Num(c.get("mean_b"), kind, src + ("mean_b",)), f" for {v}", *_cmp_parts(c, src, kind),
            tone=tone(c.get("verdict", ""))))
    # 6. per-layer signals (aggregates over all traces: no interval)
    la, lb = run.layers.get(base), run.layers.get(v)
    if lb and lb.get("teacher_forced"):
        tf = lb["teacher_forced"]
        parts = [f"Teacher-forced over {base}'s own traces, {v}'s next-token distribution diverged by a mean KL of ",
                 Num(tf.get("mean_kl"), "s", ("layers", v, "teacher_forced", "mean_kl")), " nats"]
        rel = tf.get("kl_by_relpos") or []
        vals = [(j, x) for j, x in enumerate(rel) if is_num(x)]
        if len(vals) > 1:
            j, x = max(vals, key=lambda t: t[1])
            nb = len(rel)
            parts += ["; it was largest at ", Num((j + 0.5) / nb, "pct", ("derived", "tf_peak", v)),
                      " of the way through the trace (", Num(x, "s", ("layers", v, "teacher_forced", "kl_by_relpos", j)),
                      " nats) against ", Num(vals[0][1], "s", ("layers", v, "teacher_forced", "kl_by_relpos", vals[0][0])),
                      " at the start"]
        n_on, n_tr = tf.get("n_onset"), tf.get("n_traces")
        if is_num(n_on) and is_num(n_tr) and n_tr:
            parts += ["; a sustained divergence set in on ", Num(n_on, "i", ("layers", v, "teacher_forced", "n_onset")),
                      " of ", Num(n_tr, "i", ("layers", v, "teacher_forced", "n_traces")), " traces"]
            if is_num(tf.get("onset_fraction_mean")):
                parts += [", on average ", Num(tf["onset_fraction_mean"], "pct", ("layers", v, "teacher_forced", "onset_fraction_mean")),
                          " of the way through"]
        out.append(Sentence(*parts, " (an aggregate over traces, no interval)."))
    if la and lb and la.get("settling") and lb.get("settling"):
        sa, sb = la["settling"], lb["settling"]
        ka, kb = _skey(sa, "mean_depth_fraction"), _skey(sb, "mean_depth_fraction")
        if is_num(sa.get(ka)) and is_num(sb.get(kb)):
            out.append(Sentence(
                "Settling depth (first layer whose logit-lens JSD to the output falls to g = ",
                Num(sa.get("g"), "p", ("layers", base, "settling", "g")), "), as a fraction of each model's depth: ",
                Num(sa.get(ka), "p", ("layers", base, "settling", ka)),
                f" for {base} vs ", Num(sb.get(kb), "p", ("layers", v, "settling", kb)),
                f" for {v}; deep-thinking ratio ",
                Num(sa.get("deep_thinking_ratio"), "p", ("layers", base, "settling", "deep_thinking_ratio")), " vs ",
                Num(sb.get("deep_thinking_ratio"), "p", ("layers", v, "settling", "deep_thinking_ratio")),
                " (aggregates, no interval)."))
    if la and lb:
        bi_a = dict(zip(la["layers"], la["per_layer"].get("block_influence") or []))
        bi_b = dict(zip(lb["layers"], lb["per_layer"].get("block_influence") or []))
        common = [l for l in bi_a if l in bi_b and is_num(bi_a[l]) and is_num(bi_b[l])]
        if common:
            l = max(common, key=lambda l: abs(bi_b[l] - bi_a[l]))
            ja, jb = la["layers"].index(l), lb["layers"].index(l)
            out.append(Sentence(
                f"Block influence moved most at original layer {l}: ",
                Num(bi_a[l], "s", ("layers", base, "per_layer", "block_influence", ja)), f" in {base}, ",
                Num(bi_b[l], "s", ("layers", v, "per_layer", "block_influence", jb)), f" in {v}",
                f" (layers dropped in {v}: {', '.join(map(str, run.spec(v).dropped)) or 'none'})."))
    return out


def _skey(st: dict[str, Any], name: str) -> str:
    """The key under which a settling statistic was written (writers have used two names)."""
    from layerprobe.report.load import _SETTLING_ALIASES

    for a in _SETTLING_ALIASES.get(name, (name,)):
        if a in st and st[a] is not None and a != name:
            return a
    return name


def resolve(run: RunData, derived: dict[str, Any], src: list[Any]) -> Any:
    """The value a Num's source path points at (for checks)."""
    from layerprobe.report.numbers import lookup

    head, rest = src[0], src[1:]
    if head == "metrics":
        return lookup(run.metrics, rest)
    if head == "layers":
        return lookup(run.layers, rest)
    if head == "derived":
        return lookup(derived, rest)
    return None
