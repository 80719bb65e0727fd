"""Angular distance (Gromov et al. 2024): remove the contiguous block ℓ* … ℓ*+n−1 with
ℓ* = argmin_ℓ d(ℓ, n), d(ℓ, n) = arccos(cos(x_ℓ,T, x_ℓ+n,T)) / π at the last real token."""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection
from layerprobe.prune.scores import layer_scores


class Angular(PruneMethod):
    name = "angular"
    summary = "remove the contiguous block of n layers whose input and output are closest in angle"
    needs_calibration = True

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        assert n is not None
        scores = layer_scores(loaded, calibration, n_max=n, seq_len=how.seq_len, batch_size=how.batch_size)
        d = scores.angular[n]  # d[ℓ] for ℓ = 0 … L−n (current positions)
        start = min(range(len(d)), key=lambda pos: (d[pos], pos))  # ties: the earliest block
        drop = [loaded.layer_map[p] for p in range(start, start + n)]
        return Selection(
            method=self.name,
            drop=drop,
            record={
                "n_drop": n,
                "start": loaded.layer_map[start],
                "start_position": start,
                "angular_distance": {loaded.layer_map[p]: v for p, v in enumerate(d)},
                "n_tokens": scores.n_tokens,
            },
        )


METHOD = Angular()
