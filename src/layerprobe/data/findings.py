"""Explain's findings in words (docs/explain.md#findings): the strongest mechanisms behind the pruned
variants' failures, one sentence each with the interval of every number, ranked for the report and the
terminal. Beside the verdicts' words (data.verdicts); the report's own narrative is report.narrative."""

from __future__ import annotations

import math
import statistics

from layerprobe.data.reader import Run
from layerprobe.data.schema import ExplainFile, Finding, Restoration
from layerprobe.metrics.paired import MIN_UNITS
from layerprobe.metrics.token_classes import TOKEN_CLASSES


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
            pct = 100 * comp.step_error_rate
            if comp.step_error_rate >= comp.epsilon / 2:
                how = f"; {pct:.0f} % of the steps it writes have a wrong result: errors compound step by step"
            else:
                few = "none" if pct == 0 else f"only {pct:.1f} %" if pct < 1 else f"only {pct:.0f} %"
                how = (
                    f"; yet {few} of the steps it writes {'has' if few == 'none' else 'have'} a wrong result, so its chains "
                    "fail otherwise (a step with another operation or value than the problem's, a loop, stopping early, "
                    "or no answer)"
                )
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
    back. The accuracy counts come from greedy generation (jobs.restoration.restoration_accuracy), not from the
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
