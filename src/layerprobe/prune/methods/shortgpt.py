"""ShortGPT (Men et al. 2024): remove the n layers with the lowest block influence, in one shot."""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import (
    PruneMethod,
    Selection,
    calibration_record,
    check_n_drop,
)
from layerprobe.prune.scores import layer_scores


class ShortGPT(PruneMethod):
    name = "shortgpt"
    summary = "remove the n layers with the lowest block influence (1 − mean cos(x_i, x_i+1)), one shot"
    needs_calibration = True

    def select(
        self,
        loaded: LoadedModel,
        n_drop: int | None,
        calibration: Any = None,
        *,
        seq_len: int = 256,
        batch_size: int = 8,
        **options: Any,
    ) -> Selection:
        n = check_n_drop(n_drop, loaded)
        scores = layer_scores(loaded, calibration, n_max=1, seq_len=seq_len, batch_size=batch_size)
        ranking = scores.bi_ranking()
        return Selection(
            method=self.name,
            drop=sorted(ranking[:n]),
            record={"n_drop": n, "block_influence": scores.by_original(), "ranking": ranking, "n_tokens": scores.n_tokens},
            calibration=calibration_record(calibration, seq_len),
        )


METHOD = ShortGPT()
