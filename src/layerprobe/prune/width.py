"""Width pruning: remove FFN channels, the same number in every layer, so the result keeps a plain config
(a smaller `intermediate_size`) that `from_pretrained` loads, as vLLM should (not run here; docs/definitions.md#width).

A gated MLP computes down(act(gate(x)) ⊙ up(x)); its channel c is row c of gate and up and column c of
down. Channel c of a layer is scored on the calibration text by

    S_c = mean_t |a_{t,c}| · ‖W_down[:, c]‖₂,

where a_t = act(gate(x_t)) ⊙ up(x_t) is the input of down_proj at real token t (activations of the dense
model, one pass), i.e. the average size of what the channel writes into the residual stream. Each layer
loses its c lowest-scoring channels (ties: the lower index first). No bias compensation (FLAP adds one;
the supported families' MLPs have no bias, so a plain config could not hold it). Attention heads are
kept: removing whole KV-head groups changes `num_attention_heads` in steps of a group, and the FFN
alone holds two thirds or more of a layer's weights, enough for every size asked of it here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.activations import input_statistics
from layerprobe.prune.rewrite import narrow_linear, replace_modules
from layerprobe.prune.size import count_size

PARTS = ("gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class GatedMLP:
    """One decoder layer's MLP and its three projections."""

    module: nn.Module
    gate: nn.Linear
    up: nn.Linear
    down: nn.Linear

    @property
    def width(self) -> int:
        return int(self.down.weight.shape[1])


def mlps(loaded: LoadedModel) -> list[GatedMLP]:
    """The MLP of every decoder layer; UserError unless each is a plain gated MLP of one width."""
    out = []
    for pos, layer in enumerate(loaded.layers):
        mlp = getattr(layer, "mlp", None)
        parts = [getattr(mlp, p, None) for p in PARTS] if isinstance(mlp, nn.Module) else []
        gate, up, down = (parts + [None, None, None])[:3]
        if not (
            isinstance(mlp, nn.Module)
            and isinstance(gate, nn.Linear)
            and isinstance(up, nn.Linear)
            and isinstance(down, nn.Linear)
        ):
            raise UserError(
                f"--method width needs a plain gated MLP (mlp.gate_proj, mlp.up_proj, mlp.down_proj) in every decoder layer; "
                f"layer {loaded.layer_map[pos]} of this {loaded.family} model has none"
            )
        out.append(GatedMLP(mlp, gate, up, down))
    widths = sorted({m.width for m in out})
    if len(widths) != 1:
        raise UserError(f"--method width needs the same FFN width in every layer (a plain config); this model has {widths}")
    return out


def channels_for(loaded: LoadedModel, fraction: float) -> int:
    """FFN channels to remove per layer so that the removed weights come closest to `fraction` of the
    decoder's linear weights; UserError when that is under one channel or the whole FFN."""
    layers = mlps(loaded)
    inter = layers[0].width
    per_channel = layers[0].gate.weight.shape[1] + layers[0].up.weight.shape[1] + layers[0].down.weight.shape[0]
    total = count_size(loaded).linear_weights
    c = int(fraction * total / (len(layers) * per_channel) + 0.5)
    if c < 1:
        raise UserError(f"--method width: {fraction:.3g} of the linear weights is less than one FFN channel per layer")
    if c >= inter:
        most = (inter - 1) * per_channel * len(layers) / total
        raise UserError(
            f"--method width removes FFN channels only: {fraction:.3g} of the linear weights would take all {inter} "
            f"channels of every layer (at most {most:.3g})"
        )
    return c


def width_prune(
    loaded: LoadedModel,
    fraction: float,
    ids: list[list[int]],
    *,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[LoadedModel, dict[str, Any]]:
    """A new model whose every MLP lost the same number of lowest-scoring channels (score in the module
    docstring); returns it and the record (channels removed per layer, the scores' spread)."""
    layers = mlps(loaded)
    c = channels_for(loaded, fraction)
    inter = layers[0].width
    downs: dict[str, nn.Module] = {str(pos): mlp.down for pos, mlp in enumerate(layers)}
    stats = input_statistics(loaded, ids, downs, batch_size=batch_size, progress=progress)
    prefix = loaded.arch.layers
    replacements: dict[str, nn.Module] = {}
    removed: dict[int, list[int]] = {}
    thresholds: dict[int, float] = {}
    for pos, mlp in enumerate(layers):
        col = mlp.down.weight.detach().float().norm(dim=0)  # (inter,)
        score = stats[str(pos)].mean_abs.to(col.device, torch.float32) * col
        order = torch.sort(score, stable=True).indices
        drop, keep = order[:c], torch.sort(order[c:]).values
        removed[loaded.layer_map[pos]] = sorted(int(i) for i in drop)
        thresholds[loaded.layer_map[pos]] = float(score[drop].max())
        base = f"{prefix}.{pos}.mlp"
        replacements[f"{base}.gate_proj"] = narrow_linear(mlp.gate, keep, 0)
        replacements[f"{base}.up_proj"] = narrow_linear(mlp.up, keep, 0)
        replacements[f"{base}.down_proj"] = narrow_linear(mlp.down, keep, 1)
    new = replace_modules(loaded, replacements, config_updates={"intermediate_size": inter - c})
    for m in mlps(new):
        setattr(m.module, "intermediate_size", inter - c)  # noqa: B010 - the cloned MLPs' own record of their width
    record: dict[str, Any] = {
        "channels_removed_per_layer": c,
        "intermediate_size": inter - c,
        "intermediate_size_base": inter,
        "score": "mean |down_proj input| x column norm of down_proj (dense model, one pass)",
        "score_threshold_per_layer": thresholds,
        "n_tokens": stats["0"].n_tokens,
    }
    if c * len(layers) <= 20_000:
        record["removed_channels"] = removed
    return new, record
