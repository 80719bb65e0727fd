"""LaCo (layer collapse) as a registered method; the merge and the loop live in layerprobe.prune.laco."""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.laco import laco
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection, calibration_record


class Laco(PruneMethod):
    name = "laco"
    summary = (
        "merge C layers into one (RDSC) from the top down while the last hidden states stay within "
        "cosine T of the original; --laco-mode paper (θ_l + Σ(θ_l+k − θ_l)) or reference (public code)"
    )
    needs_calibration = True
    takes_n_drop = False

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        kw = {
            k: v
            for k, v in how.options.items()
            if k in ("c", "interval", "low", "high", "threshold", "mode", "log") and v is not None
        }
        result = laco(loaded, calibration, seq_len=how.seq_len, batch_size=how.batch_size, **kw)
        record = {
            **result.params,
            "n_removed": len(result.model.dropped) - len(loaded.dropped),
            "merges": result.merges,
            "steps": result.steps,
        }
        return Selection(
            method=f"laco-{result.mode}",
            drop=[i for i in result.model.dropped if i not in loaded.dropped],
            record=record,
            calibration=calibration_record(calibration, how.seq_len),
            model=result.model,
        )


METHOD = Laco()
