"""The tables of docs/heal.md from one toy `analyze` run with healed variants: accuracy per group at the
largest budget (95 % Wilson interval), the sequential budget curve on long chains, maj@8 on long chains
(bootstrap interval), the share of "Wait"s after a wrong step value that fix it, and the mean
KL(base || variant) along the base traces; then the paired comparisons with the base at the largest
budget, and of each checkpoint variant with the pruned variant that lacks the same layers (Newcombe's
interval, exact McNemar, on sample 0).

    python scripts/heal_tables.py RUN_DIR
"""

from __future__ import annotations

import sys

from layerprobe.data import load_run
from layerprobe.metrics.paired import mcnemar_exact, newcombe_paired_interval
from layerprobe.toy.evaluate import audit_trace


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}"


def interval(value: float | None, ci: tuple[float | None, float | None]) -> str:
    lo, hi = ci
    if value is None:
        return "—"
    return f"{pct(value)} [{pct(lo)}–{pct(hi)}]" if lo is not None and hi is not None else pct(value)


def main(run_dir: str) -> None:
    run = load_run(run_dir)
    budgets = run.budgets()
    top = str(budgets[-1])
    names = [v.name for v in run.info.variants]
    groups = ["long", "short", "facts"]
    print(f"Accuracy at B = {top} (sample 0), 95 % Wilson interval\n")
    print("| variant | " + " | ".join(groups) + " | long maj@8 | Waits after a wrong value that fix it | KL(base ‖ v) |")
    print("|---|" + "---|" * (len(groups) + 3))
    for name in names:
        vm = run.metrics.variants[name]
        cells = []
        for g in groups:
            acc = vm.groups[g].sequential.get(top) if g in vm.groups else None
            cells.append(interval(acc.accuracy, acc.ci) if acc is not None else "—")
        maj = vm.groups["long"].parallel.maj_at_k.get("8") if "long" in vm.groups else None
        recs = [
            r
            for r in run.samples
            if r.variant == name and r.mode == "sequential" and str(r.budget) == top and r.group in ("long", "short")
        ]
        audits = [audit_trace(r.thinking_text) for r in recs]
        after, fixing = sum(a.waits_after_error for a in audits), sum(a.waits_fixing for a in audits)
        fix = f"{fixing} / {after}" + (f" ({100 * fixing / after:.0f} %)" if after else "")
        agg = run.layers.get(name)
        tf = agg.teacher_forced if agg is not None else None
        kl = f"{tf.mean_kl:.3f}" if tf is not None and tf.mean_kl is not None else "—"
        print(f"| {name} | " + " | ".join(cells) + f" | {interval(maj.value, maj.ci) if maj else '—'} | {fix} | {kl} |")
    print("\nLong chains: accuracy by thinking budget (sample 0)\n")
    print("| variant | " + " | ".join(f"B = {b}" for b in budgets) + " |")
    print("|---|" + "---|" * len(budgets))
    for name in names:
        seq = run.metrics.variants[name].groups["long"].sequential
        print(f"| {name} | " + " | ".join(pct(seq[str(b)].accuracy) if str(b) in seq else "—" for b in budgets) + " |")
    print(f"\nPaired with the base at B = {top} (difference in points, 95 % interval, verdict)\n")
    for c in run.metrics.comparisons:
        if c.metric == "accuracy" and c.mode == "sequential" and str(c.budget) == top and c.base == run.base:
            d = "—" if c.diff is None else f"{100 * c.diff:+.0f}"
            ci = "" if c.ci_low is None else f" [{100 * c.ci_low:+.0f}, {100 * c.ci_high:+.0f}]"
            print(f"- {c.variant}, {c.group}: {d}{ci}, {c.verdict} (p {c.p_value if c.p_value is None else f'{c.p_value:.2g}'})")

    print(f"\nPaired with the pruned variant lacking the same layers, at B = {top}\n")

    def right(v: str) -> dict[tuple[str, str], bool]:
        return {
            (r.group, r.problem_id): bool(r.correct)
            for r in run.samples
            if r.variant == v and r.mode == "sequential" and str(r.budget) == top and r.sample == 0
        }

    pruned = {tuple(v.dropped): v.name for v in run.info.variants if v.dropped and not v.checkpoint}
    for v in run.info.variants:
        other = pruned.get(tuple(v.dropped)) if v.checkpoint else None
        if other is None:
            continue
        a, b = right(v.name), right(other)
        for g in groups:
            keys = [k for k in a if k[0] == g and k in b]
            if not keys:
                continue
            n11 = sum(a[k] and b[k] for k in keys)
            n10 = sum(a[k] and not b[k] for k in keys)
            n01 = sum(b[k] and not a[k] for k in keys)
            lo, hi = newcombe_paired_interval(n11, n01, n10, len(keys) - n11 - n10 - n01)  # b - a with a = pruned
            print(
                f"- {v.name} vs {other}, {g}: {100 * (n10 - n01) / len(keys):+.0f} [{100 * lo:+.0f}, {100 * hi:+.0f}], p {mcnemar_exact(n01, n10):.2g}"
            )


if __name__ == "__main__":
    main(sys.argv[1])
