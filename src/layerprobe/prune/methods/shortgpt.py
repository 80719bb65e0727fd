"""ShortGPT (Men et al. 2024): remove the n layers with the lowest block influence, in one shot."""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection
from layerprobe.prune.scores import layer_scores


class ShortGPT(PruneMethod):
    name = "shortgpt"
    summary = "remove the n layers with the lowest block influence (1 − mean cos(x_i, x_i+1)), one shot"
    needs_calibration = True

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        assert n is not None
        scores = layer_scores(loaded, calibration, n_max=1, seq_len=how.seq_len, batch_size=how.batch_size)
        ranking = scores.bi_ranking()
        return Selection(
            method=self.name,
            drop=sorted(ranking[:n]),
            record={"n_drop": n, "block_influence": scores.by_original(), "ranking": ranking, "n_tokens": scores.n_tokens},
        )


METHOD = ShortGPT()
