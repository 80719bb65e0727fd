"""Statistics of the activations entering linear layers, over the real tokens of calibration documents
(what Wanda and the width score weigh weights by)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn as nn

from layerprobe.models.hooks import eval_mode, input_hooks, layer_hooks
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.scores import StopForward, iter_batches, pad_token_id


@dataclass
class InputStats:
    """Per input feature j of one linear layer, over N real tokens: Σ x_j² and Σ |x_j| (float64)."""

    sum_sq: torch.Tensor  # (in,)
    sum_abs: torch.Tensor  # (in,)
    n_tokens: int = 0

    @property
    def l2(self) -> torch.Tensor:
        """‖X_j‖₂ over all calibration tokens: the Wanda activation norm."""
        return self.sum_sq.sqrt()

    @property
    def mean_abs(self) -> torch.Tensor:
        """Mean |x_j| over the calibration tokens."""
        return self.sum_abs / max(1, self.n_tokens)


def input_statistics(
    loaded: LoadedModel,
    ids: list[list[int]],
    modules: Mapping[str, nn.Module],
    *,
    stop_after: int | None = None,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, InputStats]:
    """Run `loaded` over the token-id documents `ids` (right-padded batches; padding never counts) and
    accumulate the statistics of the input of every module in `modules` (name -> module, each taking
    (B, T, in)). With `stop_after` = p the forward pass ends after current layer p (the modules must be
    in layers 0..p)."""
    stats: dict[str, InputStats] = {}
    mask_now: list[torch.Tensor] = []

    def on_input(name: str, x: torch.Tensor) -> None:
        m = mask_now[0]
        if x.dim() != 3 or x.shape[:2] != m.shape:
            raise RuntimeError(f"unexpected input shape {tuple(x.shape)} at {name}")
        real = x[m].float()  # (N, in): the real tokens only
        s = stats.get(name)
        if s is None:
            s = stats[name] = InputStats(
                torch.zeros(x.shape[-1], dtype=torch.float64, device=x.device),
                torch.zeros(x.shape[-1], dtype=torch.float64, device=x.device),
            )
        s.sum_sq += (real * real).sum(0).double()
        s.sum_abs += real.abs().sum(0).double()
        s.n_tokens += int(real.shape[0])

    def stop(i: int, _x_in: torch.Tensor, _x_out: torch.Tensor) -> None:
        raise StopForward

    n_batches = (len(ids) + batch_size - 1) // batch_size
    with eval_mode(loaded.model), torch.inference_mode(), input_hooks(dict(modules), on_input):
        for b, (input_ids, mask, _lengths, _chunk) in enumerate(
            iter_batches(ids, batch_size, pad_token_id(loaded), loaded.device)
        ):
            mask_now[:] = [mask.bool()]
            try:
                if stop_after is None:
                    loaded.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
                else:
                    with layer_hooks(loaded, stop, positions=[stop_after]):
                        loaded.model(input_ids=input_ids, attention_mask=mask, use_cache=False)
            except StopForward:
                pass
            if progress is not None:
                progress(b + 1, n_batches)
    missing = [n for n in modules if n not in stats]
    if missing:
        raise RuntimeError(f"no activations reached {missing[0]}")
    return {name: stats[name] for name in modules}
