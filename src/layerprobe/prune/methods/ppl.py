"""Drop-one-layer perplexity (as in Shortened LLaMA's PPL criterion and SLEB's first step).

For each layer, the calibration perplexity of the model with only that layer removed is measured
(drop_layers shares the weights, so each candidate costs one forward pass over the calibration text,
no copy); the n layers whose removal raises perplexity least are removed, in one shot (not the
iterative re-scoring of SLEB). Costs L + 1 passes over the calibration text.
"""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection
from layerprobe.prune.scores import encode_documents, perplexity
from layerprobe.prune.surgery import drop_layers


def drop_one_perplexities(
    loaded: LoadedModel, calibration: Any, seq_len: int = 256, batch_size: int = 8, progress=None
) -> tuple[float, dict[int, float]]:
    """(base perplexity, {original layer: perplexity of the model without that layer})."""
    ids = encode_documents(loaded.tokenizer, calibration, seq_len)
    base, _, _ = perplexity(loaded, None, seq_len, batch_size, ids=ids)
    out: dict[int, float] = {}
    for k, orig in enumerate(loaded.layer_map):
        candidate = drop_layers(loaded, [orig], method="ppl-candidate")
        out[orig], _, _ = perplexity(candidate, None, seq_len, batch_size, ids=ids)
        if progress is not None:
            progress(k + 1, loaded.n_layers)
    return base, out


class Perplexity(PruneMethod):
    name = "ppl"
    summary = "remove the n layers whose single removal raises calibration perplexity least, one shot"
    needs_calibration = True

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        assert n is not None
        base, ppl = drop_one_perplexities(loaded, calibration, how.seq_len, how.batch_size, how.options.get("progress"))
        ranking = sorted(ppl, key=lambda orig: (ppl[orig], orig))
        return Selection(
            method=self.name,
            drop=sorted(ranking[:n]),
            record={"n_drop": n, "perplexity_base": base, "perplexity_without": ppl, "ranking": ranking},
        )


METHOD = Perplexity()
