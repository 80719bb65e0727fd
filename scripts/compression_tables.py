"""The tables of docs/compression.md from a run's compression.json (written by `layerprobe analyze` and
`layerprobe explain`): per variant its size, accuracy per group at the largest budget (95 % Wilson
interval), the paired difference against the base and against ShortGPT of the same size on long chains
(Newcombe interval, exact McNemar p), the long-chain budget curve and its slope per doubling (bootstrap
interval), maj@8, "Wait"s that fix an error, the criteria, and the mechanism numbers.

    python scripts/compression_tables.py RUN_DIR
"""

from __future__ import annotations

import sys

from layerprobe.data import load_run


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.0f}"


def pts(x: float | None) -> str:
    if x is None:
        return "—"
    t = f"{100 * x:+.0f}"
    return "0" if t in ("+0", "-0") else t.replace("-", "−")


def iv(value: float | None, ci: tuple[float | None, float | None], f=pct) -> str:
    if value is None:
        return "—"
    lo, hi = ci
    return f"{f(value)} [{f(lo)}, {f(hi)}]" if lo is not None and hi is not None else f(value)


def small(x: float | None) -> str:
    if x is None:
        return "—"
    if abs(x) < 1e-9:
        return "0"
    return f"{x:.2g}" if abs(x) < 0.01 else f"{x:.3f}"


def main(run_dir: str) -> None:
    run = load_run(run_dir)
    cf = run.extras.get("compression.json")
    if cf is None:
        raise SystemExit(f"{run_dir} has no compression.json (run `layerprobe explain {run_dir}` to write it)")
    g = cf.long_group
    groups = cf.groups
    print(
        f"Accuracy at {cf.budget} tokens (sequential trace), 95 % Wilson interval; {g}: paired change (points, 95 % Newcombe interval, McNemar p)\n"
    )
    head = ["variant", "kind, size", "weights kept", *groups, f"{g} vs base", f"{g} vs ShortGPT", "keeps long chains"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in cf.rows:
        vb, vr = r.vs_base.get(g), r.vs_reference.get(g)
        cells = [
            r.variant,
            f"{r.kind}, {r.size_label}" if r.size_label else r.kind,
            f"{100 * r.kept_fraction:.1f} %" if r.kept_fraction is not None else "—",
            *[iv(r.accuracy[x].value, r.accuracy[x].ci) if x in r.accuracy else "—" for x in groups],
            f"{iv(vb.diff, (vb.ci_low, vb.ci_high), pts)}, p {vb.p_value:.2g}" if vb else "—",
            f"{iv(vr.diff, (vr.ci_low, vr.ci_high), pts)}, p {vr.p_value:.2g}"
            if vr
            else ("(the reference)" if r.method == cf.reference_method else "none at this size" if r.size_label else "—"),
            {True: "yes", False: "no", None: "—"}[r.keeps_long_chains],
        ]
        print("| " + " | ".join(cells) + " |")
    budgets = [str(b) for b in cf.budgets]
    print(f"\n{g}: accuracy per thinking budget (sequential), slope per doubling (95 % bootstrap interval), maj@8, Waits\n")
    head = [
        "variant",
        *budgets,
        "slope, points per doubling",
        "still scales",
        f"maj@{cf.rows[0].maj_k}",
        "Waits after a wrong step that fix it",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in cf.rows:
        curve = r.budget_curve.get(g, {})
        s = r.slope.get(g)
        m = r.maj.get(g)
        w = r.waits
        cells = [
            r.variant,
            *[pct(curve.get(b)) for b in budgets],
            iv(s.value, s.ci, pts) if s is not None else "—",
            {True: "yes", False: "no", None: "—"}[r.keeps_scaling],
            iv(m.value, m.ci) if m is not None else "—",
            f"{w.fixing} of {w.after_error} ({w.waits} Waits, {w.after_correct} after a right step)" if w is not None else "—",
        ]
        print("| " + " | ".join(cells) + " |")
    print("\nMechanism: along the base traces (teacher-forced) and in the variant's own traces\n")
    head = [
        "variant",
        "traces written as the base's",
        "KL(base ‖ v), nats",
        "base traces with an onset",
        "failing traces part at (median [95 % CI], n)",
        "wrong steps",
        "off-program steps",
        "ε [95 % CI]",
        "lens drift, mean / last layer",
        "settling depth",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in cf.rows:
        m = r.mechanism
        cells = [
            r.variant,
            f"{pct(m.same_text_share)} % of {m.n_same_text}" if m.same_text_share is not None else "—",
            small(m.tf_mean_kl),
            pct(m.tf_onset_share) + (" %" if m.tf_onset_share is not None else ""),
            (iv(m.first_departure_median, m.first_departure_ci) + f", {m.n_failing}")
            if m.first_departure_median is not None
            else (f"—, {m.n_failing}" if m.n_failing is not None else "—"),
            small(m.step_error_rate),
            f"{100 * r.waits.off_program / r.waits.steps:.1f} % of {r.waits.steps}" if r.waits and r.waits.steps else "—",
            iv(m.epsilon, m.epsilon_ci, small) if m.epsilon is not None else "—",
            f"{small(m.drift_mean)} / {small(m.drift_last)}",
            small(m.settling_fraction),
        ]
        print("| " + " | ".join(cells) + " |")
    print("\nSize and speed\n")
    head = [
        "variant",
        "layers",
        "layers' worth removed",
        "FLOPs/token (dense) vs base",
        "zeros skipped",
        "tokens/s here",
        "base tokens/s",
    ]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in cf.rows:
        cells = [
            r.variant,
            str(r.n_layers),
            f"{r.layers_removed_equivalent:.2f}" if r.layers_removed_equivalent is not None else "—",
            f"{100 * r.flops_per_token:.1f} %" if r.flops_per_token is not None else "—",
            f"{100 * r.flops_per_token_sparse:.1f} %" if r.flops_per_token_sparse is not None else "—",
            f"{r.tokens_per_s:.1f}" if r.tokens_per_s else "—",
            f"{r.tokens_per_s_base:.1f}" if r.tokens_per_s_base else "—",
        ]
        print("| " + " | ".join(cells) + " |")
    if cf.load_average is not None:
        print(f"\n(load average {cf.load_average} when the speeds were measured)")


if __name__ == "__main__":
    main(sys.argv[1])
