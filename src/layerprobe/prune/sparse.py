"""Unstructured and N:M sparsity of the decoder's linear weights (docs/definitions.md#sparsity).

For a linear layer y = W x (W: out × in) a score S_ij is given to every weight and the weights are
compared **within each output row** i:

- magnitude: S_ij = |W_ij|;
- Wanda (Sun et al. 2023): S_ij = |W_ij| · ‖X_j‖₂, with ‖X_j‖₂ the L2 norm of input feature j over every
  real calibration token reaching that layer.

Unstructured at fraction F: a matrix loses round(F · out · in) weights, spread over its rows as evenly as
possible (each row loses ⌊that / out⌋ or one more, the extra ones going to the first rows), and each row
loses its lowest-scoring weights (ties: the lower column first). So a requested size is met to within one
weight per matrix. N:M: each block of M consecutive inputs of a row keeps its N highest-scoring weights.
Pruned weights are set to exactly 0; nothing else changes (no weight update).

Wanda's activations are those of the model being pruned, layer by layer, as the paper's code does: layer
p's statistics are taken with layers 0 … p−1 already pruned (one forward pass over the calibration text
per layer, stopped after layer p); inside a layer every linear sees the layer still dense.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.activations import input_statistics
from layerprobe.prune.rewrite import linear_with_weight, replace_modules
from layerprobe.prune.size import decoder_linears

SCORES = ("magnitude", "wanda")


def per_row_counts(n_out: int, n_in: int, fraction: float) -> torch.Tensor:
    """Weights each of `n_out` rows of `n_in` inputs loses at fraction F: round(F · n_out · n_in) in all
    (halves up), ⌊total / n_out⌋ per row and one more for the first total mod n_out rows."""
    total = min(n_out * n_in, int(fraction * n_out * n_in + 0.5))
    base, extra = divmod(total, n_out)
    counts = torch.full((n_out,), base, dtype=torch.long)
    counts[:extra] += 1
    return counts


def row_mask(score: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Keep-mask (out × in, bool) removing the counts[i] lowest scores of row i (ties: the lower column first)."""
    order = torch.sort(score, dim=1, stable=True).indices  # (out, in): columns from the lowest score up
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(score.shape[1], device=score.device).expand_as(order).contiguous())
    return rank >= counts.to(score.device)[:, None]


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask keeping, in each block of m consecutive inputs of a row, the n highest scores (ties: the
    lower column first is removed)."""
    out_f, in_f = score.shape
    if in_f % m:
        raise UserError(f"--nm {n}:{m}: a linear layer has {in_f} inputs, not a multiple of {m}")
    blocks = score.reshape(out_f, in_f // m, m)
    drop = torch.sort(blocks, dim=2, stable=True).indices[..., : m - n]
    keep = torch.ones_like(blocks, dtype=torch.bool)
    keep.scatter_(2, drop, False)
    return keep.reshape(out_f, in_f)


def sparsify(
    loaded: LoadedModel,
    score: str,
    *,
    fraction: float | None = None,
    nm: tuple[int, int] | None = None,
    ids: list[list[int]] | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[LoadedModel, dict[str, Any]]:
    """A new model with the decoder's linear weights sparsified by `score` (magnitude | wanda), either
    unstructured at `fraction` or N:M (`nm`); Wanda reads the calibration documents `ids` (token ids).
    Returns the model and a record (per layer the share of its linear weights set to zero; for Wanda the
    tokens its statistics were taken over)."""
    if score not in SCORES:
        raise ValueError(f"unknown score {score}")
    if (fraction is None) == (nm is None):
        raise ValueError("give a fraction or an N:M pattern")
    if score == "wanda" and not ids:
        raise ValueError("Wanda needs calibration documents")
    if nm is not None:
        for _pos, name, mod in decoder_linears(loaded):
            if mod.weight.shape[1] % nm[1]:
                raise UserError(f"--nm {nm[0]}:{nm[1]}: {name} has {mod.weight.shape[1]} inputs, not a multiple of {nm[1]}")
    prefix = loaded.arch.layers
    current = loaded
    per_layer: dict[int, float] = {}
    n_tokens = 0
    n_layers = loaded.n_layers
    for pos in range(n_layers):
        linears = {name: mod for name, mod in current.layers[pos].named_modules() if isinstance(mod, torch.nn.Linear)}
        stats = input_statistics(current, ids or [], linears, stop_after=pos, batch_size=batch_size) if score == "wanda" else {}
        replacements = {}
        removed = total = 0
        for name, mod in linears.items():
            w = mod.weight.detach()
            s = w.float().abs()
            if score == "wanda":
                s = s * stats[name].l2.to(s.device, torch.float32)[None, :]
                n_tokens = stats[name].n_tokens
            keep = nm_mask(s, *nm) if nm is not None else row_mask(s, per_row_counts(w.shape[0], w.shape[1], fraction or 0.0))
            replacements[f"{prefix}.{pos}.{name}"] = linear_with_weight(mod, w * keep.to(w.dtype))
            removed += int((~keep).sum())
            total += keep.numel()
        current = replace_modules(current, replacements)
        per_layer[loaded.layer_map[pos]] = removed / total if total else 0.0
        if progress is not None:
            progress(pos + 1, n_layers)
    record: dict[str, Any] = {"score": score, "zeroed_share_per_layer": per_layer, "compared_within": "output row"}
    if fraction is not None:
        record["fraction"] = fraction
    if nm is not None:
        record["nm"] = f"{nm[0]}:{nm[1]}"
    if score == "wanda":
        record.update(
            {"activations": "the model being pruned, layer by layer (layers below already pruned)", "n_tokens": n_tokens}
        )
    return current, record
