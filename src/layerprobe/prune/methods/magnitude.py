"""Magnitude pruning: each row of every decoder linear weight loses its smallest |W_ij| (prune/sparse.py)."""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection
from layerprobe.prune.sparse import sparsify


class Magnitude(PruneMethod):
    name = "magnitude"
    summary = "unstructured: zero the smallest |W| of every row of the decoder's linear weights (no text read)"
    kind = "unstructured"

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        size = how.options["size"]
        fraction = size.fraction(loaded)
        model, record = sparsify(loaded, "magnitude", fraction=fraction, progress=how.options.get("progress"))
        return Selection(method=self.name, drop=[], record=record, model=model)


METHOD = Magnitude()
