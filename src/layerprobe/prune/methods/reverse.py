"""Reverse-order pruning: remove the last n layers; the keep-final variant keeps the last layer and
removes the n before it (positions L−1−n … L−2)."""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection


class Reverse(PruneMethod):
    name = "reverse"
    summary = "remove the last n layers (no calibration text)"
    keep_final = False

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        assert n is not None
        L = loaded.n_layers
        positions = range(L - 1 - n, L - 1) if self.keep_final else range(L - n, L)
        drop = [loaded.layer_map[p] for p in positions]
        return Selection(method=self.name, drop=drop, record={"n_drop": n, "keep_final": self.keep_final})


class ReverseKeepFinal(Reverse):
    name = "reverse-keep-final"
    summary = "remove the n layers just before the last one (L−1−n … L−2), keeping the final layer"
    keep_final = True


METHOD = Reverse()
METHOD_KEEP_FINAL = ReverseKeepFinal()
