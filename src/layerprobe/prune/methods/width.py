"""Width pruning: the same number of lowest-scoring FFN channels removed from every layer (prune/width.py)."""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection
from layerprobe.prune.scores import encode_documents
from layerprobe.prune.width import width_prune


class Width(PruneMethod):
    name = "width"
    summary = (
        "structured: remove the FFN channels with the lowest mean |activation| x down_proj column norm, same count per layer"
    )
    needs_calibration = True
    kind = "width"

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        size = how.options["size"]
        ids = encode_documents(loaded.tokenizer, calibration, how.seq_len)
        model, record = width_prune(
            loaded, size.fraction(loaded), ids, batch_size=how.batch_size, progress=how.options.get("progress")
        )
        return Selection(method=self.name, drop=[], record=record, model=model)


METHOD = Width()
