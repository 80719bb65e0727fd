"""Wanda (Sun et al. 2023): each row of every decoder linear weight loses its lowest |W_ij| · ‖X_j‖₂
(prune/sparse.py), activations from the calibration text."""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection
from layerprobe.prune.scores import encode_documents
from layerprobe.prune.sparse import sparsify


class Wanda(PruneMethod):
    name = "wanda"
    summary = "unstructured: zero the lowest |W_ij|·‖X_j‖₂ of every row (activations on the calibration text)"
    needs_calibration = True
    kind = "unstructured"

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        size = how.options["size"]
        ids = encode_documents(loaded.tokenizer, calibration, how.seq_len)
        model, record = sparsify(
            loaded,
            "wanda",
            fraction=size.fraction(loaded),
            ids=ids,
            batch_size=how.batch_size,
            progress=how.options.get("progress"),
        )
        return Selection(method=self.name, drop=[], record=record, model=model)


METHOD = Wanda()
