"""trace-kl: a depth selection made for reasoning. Greedily remove the layer whose removal changes the
model's next-token distributions least along its own reasoning traces (teacher-forced KL), re-scoring
after each removal (prune/tracekl.py)."""

from __future__ import annotations

from typing import Any

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.methods.base import PruneMethod, Scoring, Selection
from layerprobe.prune.tracekl import greedy_trace_kl


class TraceKL(PruneMethod):
    name = "trace-kl"
    summary = (
        "remove, one at a time, the layer whose removal changes the next-token distributions least along the "
        "model's own reasoning traces (KL, teacher-forced), re-scored after each removal"
    )
    needs_calibration = True
    needs_traces = True

    def choose(self, loaded: LoadedModel, n: int | None, calibration: Any, how: Scoring) -> Selection:
        assert n is not None
        order, record = greedy_trace_kl(
            loaded, calibration, n, seq_len=how.seq_len, batch_size=how.batch_size, progress=how.options.get("progress")
        )
        return Selection(method=self.name, drop=sorted(order), record=record)


METHOD = TraceKL()
