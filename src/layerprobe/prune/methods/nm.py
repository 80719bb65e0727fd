"""N:M semi-structured sparsity by the Wanda score: every block of M consecutive inputs of a row keeps
its N highest |W_ij| · ‖X_j‖₂ (prune/sparse.py). 2:4 removes half of the weights by construction."""

from __future__ import annotations

from typing import Any

from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection
from layerprobe.prune.scores import encode_documents
from layerprobe.prune.size import SizeRequest
from layerprobe.prune.sparse import sparsify


class NM(PruneMethod):
    name = "nm"
    summary = "semi-structured N:M (--nm 2:4): keep the N highest Wanda scores of every M consecutive weights of a row"
    needs_calibration = True
    kind = "semi-structured"

    def check_size(self, size: SizeRequest | None) -> SizeRequest:
        if size is None or size.nm is None:
            raise UserError(
                "--method nm takes its size from the pattern: give --nm N:M (e.g. 2:4, which removes half the weights), "
                "not --sparsity / --match-layers"
            )
        return size

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        size = how.options["size"]
        ids = encode_documents(loaded.tokenizer, calibration, how.seq_len)
        model, record = sparsify(
            loaded, "wanda", nm=size.nm, ids=ids, batch_size=how.batch_size, progress=how.options.get("progress")
        )
        return Selection(method=self.name, drop=[], record=record, model=model)


METHOD = NM()
