"""Causal layer restoration: the full model with chosen layers' residual update gated per position.

For the layers a pruned variant lacks, the base model runs with

    h_out = h_in + g_t * (layer(h_in) - h_in),   g_t in {0, 1} per position t,

so g = 0 everywhere is exactly the pruned model (the gated layers change nothing: later layers see
what the pruned model's see), and g = 1 everywhere is exactly the base model. The gated layers still
compute their attention keys and values at every position. Gates are per batch row, so one forward
pass evaluates several gate patterns over the same sequence.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from layerprobe.models.hooks import layer_hooks
from layerprobe.models.loaded import LoadedModel

#: (batch, positions) -> gates (batch, positions) in {0, 1}, float; asked at every forward pass.
GateFn = Callable[[torch.Tensor], torch.Tensor]


@contextmanager
def gated_layers(loaded: LoadedModel, original_layers: Sequence[int], gates: GateFn | torch.Tensor) -> Iterator[None]:
    """Within the block, the layers of `loaded` with these ORIGINAL indices add their update only
    where the gate is 1. `gates` is a (B, T) tensor for a single forward pass over T positions, or a
    function of each forward pass's input ids (B, t) returning (B, t) gates (for generation)."""
    positions = [loaded.layer_map.index(o) for o in original_layers]
    current: dict[str, torch.Tensor] = {}

    def on_input_ids(_module: Any, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            raise TypeError("gated layers need the forward pass's input_ids")
        current["g"] = gates(ids) if callable(gates) else gates

    def gate(_i: int, x_in: torch.Tensor, x_out: torch.Tensor) -> torch.Tensor:
        g = current["g"].to(device=x_out.device)
        if g.shape != x_out.shape[:2]:
            raise ValueError(f"gates of shape {tuple(g.shape)} for a layer output of shape {tuple(x_out.shape)}")
        # a selection, not x_in + g * (x_out - x_in): g = 0 / 1 must give the pruned / base model bit for bit
        return torch.where(g.bool().unsqueeze(-1), x_out, x_in)

    handle = loaded.model.register_forward_pre_hook(on_input_ids, with_kwargs=True)
    try:
        with layer_hooks(loaded, gate, positions=positions):
            yield
    finally:
        handle.remove()


@torch.inference_mode()
def gated_logprobs(
    loaded: LoadedModel, original_layers: Sequence[int], input_ids: Sequence[int], gates: torch.Tensor, keep: slice
) -> torch.Tensor:
    """Next-token log-probabilities (B, k, V) at positions `keep` of one sequence, for B gate patterns
    (gates: (B, T) over the sequence's T positions), in one forward pass."""
    ids = torch.tensor([list(input_ids)] * gates.shape[0], dtype=torch.long, device=loaded.device)
    with gated_layers(loaded, original_layers, gates.to(loaded.device)):
        logits = loaded.model(input_ids=ids, use_cache=False).logits[:, keep].float()
    return logits - torch.logsumexp(logits, -1, keepdim=True)
