"""Words for the names stored in explain.json: what a position class or a predictor feature is, said
so that a reader understands a finding without the documentation. One table, used by explain's
findings, the report's figures and the terminal."""

from __future__ import annotations

from collections.abc import Sequence

POSITIONS: dict[str, str] = {
    "all": "every position",
    "none": "no position",
    "thinking": "every thinking token",
    "answer": "the answer tokens",
    "answer-start": "the end of thinking and the first three answer tokens",
    "first-25%": "the first quarter of the thinking",
    "rest-75%": "the last three quarters of the thinking",
    "first-50%": "the first half of the thinking",
    "rest-50%": "the second half of the thinking",
    "first-75%": "the first three quarters of the thinking",
    "rest-25%": "the last quarter of the thinking",
    "numbers": "the number tokens",
    "equals": "the '=' tokens (where each step's result is written)",
    "operations": "the operation tokens (+5, *3, -, /)",
    "operators": "the operator tokens ('=', +5, *3; explain.json of an older layerprobe)",
    "boundaries": "the step boundaries (new lines, step markers, punctuation)",
    "reflection": "the reflection words (wait, hmm, ...)",
    "other": "every other token",
}
"""Position and token classes of causal restoration (metrics.token_classes), in words."""

SHORT_POSITIONS: dict[str, str] = {
    "first-25%": "first 25 %",
    "rest-75%": "last 75 %",
    "first-50%": "first half",
    "rest-50%": "second half",
    "first-75%": "first 75 %",
    "rest-25%": "last 25 %",
    "answer-start": "answer start",
    "equals": "'=' tokens",
    "operations": "operations",
    "numbers": "numbers",
    "boundaries": "step boundaries",
    "reflection": "reflection words",
}
"""The same classes as axis labels (a few words)."""

FEATURES: dict[str, str] = {
    "thinking_tokens": "thinking length",
    "budget_exhausted": "thinking budget used up",
    "loop": "ends in a loop",
    "seq_rep": "share of repeated 4-grams",
    "self_bleu_within": "self-similarity within the trace (Self-BLEU)",
    "reflections_per_1k": "reflection words per 1k tokens",
    "lens_entropy": "logit-lens entropy",
    "settling_depth": "settling depth",
    "deep_thinking_ratio": "share of deep-thinking tokens",
    "tf_kl_mean": "mean divergence from the base model (teacher-forced KL)",
    "tf_kl_max": "largest divergence from the base model (teacher-forced KL)",
    "tf_onset_fraction": "where the divergence from the base model starts",
}
"""Failure-predictor features (jobs.predictors.FEATURES), in words."""


def position_words(name: str) -> str:
    """A position or token class in words (the name itself when it is not known)."""
    return POSITIONS.get(name, f"{name} positions")


def position_label(name: str) -> str:
    """A position or token class as a short axis label."""
    return SHORT_POSITIONS.get(name, name)


def feature_words(name: str) -> str:
    """A predictor feature in words (the name itself when it is not known)."""
    return FEATURES.get(name, name)


def layers_words(dropped: Sequence[int]) -> str:
    """ "layer 5", "layers 7 and 8", "layers 3, 4 and 5"."""
    d = [str(i) for i in dropped]
    if len(d) == 1:
        return f"layer {d[0]}"
    return f"layers {', '.join(d[:-1])} and {d[-1]}" if d else "no layer"
