"""Failure predictors (docs/explain.md#failure-predictors): which measured signals of a trace announce a
wrong answer, by scikit-learn classifiers cross-validated by problem, against thinking length alone."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from layerprobe.data.reader import Run
from layerprobe.data.schema import PredictorFeature, Predictors, SampleRecord, teacher_forced_file
from layerprobe.metrics.paired import N_BOOT, bootstrap
from layerprobe.probe.layer_files import DamagedFile, load_trace_layers
from layerprobe.rules import inside

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
    """Bootstrap AUCs (and AUC(p) - AUC(q) when q is given), resampling problems (resamples with one
    class only are left out)."""
    problems = [np.flatnonzero(groups == g) for g in sorted(set(groups.tolist()))]

    def aucs(i: np.ndarray) -> list[float]:
        a = auc(y[i], p[i])
        return [a, a - auc(y[i], q[i])] if q is not None else [a]

    boots = bootstrap(aucs, len(y), N_BOOT, seed, clusters=problems).reshape(-1, 1 if q is None else 2)
    return boots[:, 0], (boots[:, 1] if q is not None else np.asarray([]))


PREDICTOR_MIN_EACH = 8
"""Fewest wrong and fewest right traces the failure predictors are fitted on."""


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
