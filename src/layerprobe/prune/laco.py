"""LaCo, layer collapse (Yang et al. 2024), faithful to the paper, with the public code's variant.

Merging m followers into layer l (RDSC, "reserving differences while seeking common"):

    paper mode:      θ*_l = θ_l + Σ_{k=1..m} (θ_{l+k} − θ_l)       for every weight and bias of every
                                                                   linear layer of the block (attention
                                                                   q/k/v/o and MLP projections)
    reference mode:  θ_l ← θ_l + (θ_{l+k} − θ_l), in place, for k = 1 … m, which leaves θ_{l+m}:
                     the public code's in-place update is a replacement by the last follower.

Everything else in the block (input_layernorm, post_attention_layernorm, Qwen3's q_norm / k_norm) comes
from layer l unchanged, and layers l+1 … l+m are deleted. Example for one parameter with value 1 in
layer l and 2, 5, 7 in its followers: paper mode gives 1 + (1 + 4 + 6) = 12, reference mode gives 7.

The loop (layerprobe's reading of the paper's Algorithm 1): a step merges C layers into one, layer l
with its C − 1 followers. L … H is the range of layers (current positions, inclusive) that may take part:
the first candidate is the top block l = H − C + 1 … H. Each candidate model is compared with the
*original* model: s = mean over calibration documents of cos(flatten(h_orig), flatten(h_merged)), h the
last hidden state (after the final norm, as transformers' `hidden_states[-1]` and the public code) over
the document's real tokens. If s > T the merge is kept and l moves down I layers, else l moves down 1;
the loop ends when l < L. Near the top, a block is cut at the last layer. The public code writes the
range as `HIGHEST_LAY` with the first candidate at `HIGHEST_LAY − MERGE_LAYERS`, i.e. H exclusive:
its HIGHEST_LAY = 40 on a 40-layer model is H = 39 here.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from layerprobe.errors import UserError
from layerprobe.models.hooks import eval_mode
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.scores import (
    encode_documents,
    final_hidden_states,
    iter_batches,
    pad_token_id,
)
from layerprobe.prune.surgery import drop_layers, set_layer_idx

MODES = ("paper", "reference")


def merge_tensors(base: torch.Tensor, followers: Sequence[torch.Tensor], mode: str) -> torch.Tensor:
    """A new tensor: the RDSC merge of `base` with `followers` (paper) or the public code's result (reference)."""
    if mode == "paper":
        b = base.detach().float()
        acc = b.clone()
        for f in followers:
            acc += f.detach().float() - b
        return acc.to(base.dtype)
    if mode == "reference":
        w = base.detach().clone()
        for f in followers:  # the public code: merged.add_(follower - merged), in place
            w.add_(f.detach() - w)
        return w
    raise UserError(f"--laco-mode {mode}: unknown (valid: {', '.join(MODES)})")


def merged_layer(base: nn.Module, followers: Sequence[nn.Module], mode: str) -> tuple[nn.Module, list[str], list[str]]:
    """A new decoder layer (own tensors) with every linear weight/bias merged and the rest from `base`.

    Returns (layer, names of merged parameters, names of parameters taken from `base`).
    """
    new = copy.deepcopy(base)
    follower_params = [dict(f.named_parameters()) for f in followers]
    merged, kept = [], []
    with torch.no_grad():
        for mod_name, module in new.named_modules():
            own = [(pn, p) for pn, p in module.named_parameters(recurse=False)]
            for pname, param in own:
                full = f"{mod_name}.{pname}" if mod_name else pname
                if isinstance(module, nn.Linear):
                    others = []
                    for k, fp in enumerate(follower_params):
                        if full not in fp or fp[full].shape != param.shape:
                            raise ValueError(f"follower {k + 1} has no parameter {full} of shape {tuple(param.shape)}")
                        others.append(fp[full])
                    param.copy_(merge_tensors(param, others, mode))
                    merged.append(full)
                else:
                    kept.append(full)
    return new, merged, kept


def merge_layers(
    loaded: LoadedModel, base_pos: int, n_followers: int, mode: str = "paper", method: str | None = None
) -> tuple[LoadedModel, dict[str, Any]]:
    """A new LoadedModel in which the layer at current position `base_pos` absorbs the next `n_followers`.

    The merged layer gets new tensors and keeps the original index of layer `base_pos`; the followers
    are removed (drop_layers: config, layer_idx and layer_map updated); every other module is shared
    with `loaded`, which is not modified.
    """
    L = loaded.n_layers
    if not 0 <= base_pos < L - 1 or n_followers < 1 or base_pos + n_followers >= L:
        raise ValueError(f"cannot merge {n_followers} followers into position {base_pos} of a {L}-layer model")
    layers = loaded.layers
    followers = [layers[base_pos + k] for k in range(1, n_followers + 1)]
    new_layer, merged, kept = merged_layer(layers[base_pos], followers, mode)
    for module in new_layer.modules():
        if isinstance(getattr(module, "layer_idx", None), int):
            set_layer_idx(module, base_pos)
    follower_orig = [loaded.layer_map[base_pos + k] for k in range(1, n_followers + 1)]
    out = drop_layers(loaded, follower_orig, method=method or f"laco-{mode}")
    out.layers[base_pos] = new_layer
    info = {"base": loaded.layer_map[base_pos], "followers": follower_orig, "merged_params": merged, "kept_params": kept}
    return out, info


@dataclass
class LacoResult:
    model: LoadedModel
    mode: str
    params: dict[str, Any]
    steps: list[dict[str, Any]] = field(default_factory=list)  # every candidate tried
    merges: list[dict[str, Any]] = field(default_factory=list)  # accepted merges

    @property
    def removed(self) -> list[int]:
        return self.model.dropped


def check_laco_params(
    n_layers: int, c: int, interval: int, low: int | None, high: int | None, threshold: float, mode: str
) -> tuple[int, int]:
    """Validate LaCo parameters for a model with `n_layers` layers; returns (low, high)."""
    if mode not in MODES:
        raise UserError(f"--laco-mode {mode}: unknown (valid: {', '.join(MODES)})")
    if c < 2:
        raise UserError(f"--laco-c {c}: must be at least 2 (layers merged into one per step)")
    if interval < 1:
        raise UserError(f"--laco-i {interval}: must be at least 1")
    if not (0.0 < threshold <= 1.0):
        raise UserError(f"--laco-threshold {threshold}: must be in (0, 1]")
    lo = 0 if low is None else low
    hi = n_layers - 1 if high is None else high
    for flag, v in (("--laco-low", lo), ("--laco-high", hi)):
        if not 0 <= v <= n_layers - 1:
            raise UserError(f"{flag} {v}: must be a layer position in 0..{n_layers - 1}")
    if lo > hi:
        raise UserError(f"--laco-low {lo} is above --laco-high {hi}")
    if hi - lo + 1 < c:
        raise UserError(f"--laco-c {c}: the range {lo}..{hi} holds only {hi - lo + 1} layers, fewer than one merge")
    return lo, hi


class _Similarity:
    """Mean cosine between the flattened last hidden states of the original model and a candidate,
    over the calibration documents (real tokens only); the original's states are computed once."""

    def __init__(self, original: LoadedModel, ids: list[list[int]], batch_size: int):
        self.ids = ids
        self.batch_size = batch_size
        self.pad = pad_token_id(original)
        self.reference: dict[int, torch.Tensor] = {}
        for doc, h in self._states(original):
            self.reference[doc] = h

    def _states(self, loaded: LoadedModel):
        with eval_mode(loaded.model), torch.inference_mode():
            for input_ids, mask, lengths, chunk in iter_batches(self.ids, self.batch_size, self.pad, loaded.device):
                h = final_hidden_states(loaded, input_ids, mask)
                for row, doc in enumerate(chunk):
                    yield doc, h[row, : int(lengths[row])].float().flatten()

    def __call__(self, candidate: LoadedModel) -> float:
        sims = []
        for doc, h in self._states(candidate):
            ref = self.reference[doc]
            num = torch.dot(ref.double(), h.double())
            den = ref.double().norm() * h.double().norm()
            sims.append(float(num / den.clamp_min(1e-30)))
        return sum(sims) / len(sims)


def laco(
    loaded: LoadedModel,
    calibration: Any,
    *,
    c: int = 4,
    interval: int = 2,
    low: int | None = None,
    high: int | None = None,
    threshold: float = 0.45,
    mode: str = "paper",
    seq_len: int = 256,
    batch_size: int = 8,
    log: Callable[[dict[str, Any]], None] | None = None,
) -> LacoResult:
    """Run the LaCo loop on `loaded` (not modified) and return the collapsed model and its record.

    The number of removed layers follows from `threshold`; it may be zero.
    """
    lo, hi = check_laco_params(loaded.n_layers, c, interval, low, high, threshold, mode)
    ids = encode_documents(loaded.tokenizer, calibration, seq_len)
    similarity = _Similarity(loaded, ids, batch_size)
    label = f"laco-{mode}"
    current = loaded
    absorbed = {orig: [orig] for orig in loaded.layer_map}
    steps: list[dict[str, Any]] = []
    merges: list[dict[str, Any]] = []
    pos = hi - c + 1
    while pos >= lo:
        m = min(c - 1, current.n_layers - 1 - pos)
        if m < 1:
            pos -= 1
            continue
        candidate, info = merge_layers(current, pos, m, mode, method=label)
        s = similarity(candidate)
        step = {"position": pos, "base": info["base"], "followers": info["followers"], "similarity": s, "accepted": s > threshold}
        steps.append(step)
        if log is not None:
            log(step)
        if s > threshold:
            group = list(absorbed[info["base"]])
            for f in info["followers"]:
                group += absorbed.pop(f)
            absorbed[info["base"]] = sorted(group)
            merges.append(
                {
                    "base": info["base"],
                    "followers": info["followers"],
                    "absorbs": sorted(group),
                    "similarity": s,
                    "merged_params": info["merged_params"],
                    "kept_params": info["kept_params"],
                }
            )
            current = candidate
            pos -= interval
        else:
            pos -= 1
    if current is loaded:  # nothing merged: a fresh record of the same model
        current = copy.copy(loaded)
        current.extra = dict(loaded.extra)
    current.method = label
    params = {"mode": mode, "c": c, "interval": interval, "low": lo, "high": hi, "threshold": threshold}
    current.extra["laco"] = {**params, "merges": [{k: v for k, v in mg.items() if not k.endswith("_params")} for mg in merges]}
    return LacoResult(model=current, mode=mode, params=params, steps=steps, merges=merges)
