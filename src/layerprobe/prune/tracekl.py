"""A depth selection made for reasoning: remove, one layer at a time, the layer whose removal changes the
model's next-token distributions least along its own reasoning traces (docs/definitions.md#trace-kl).

The traces are the model's own greedy reasoning traces (`--calib-traces N`, `traces_calibration`). For a
candidate model C (the original model without a set of layers), its distance from the original model O is

    D(C) = (1/N) Σ_traces (1/|G|) Σ_{n ∈ G} KL(p_O(· | x_<n) ‖ p_C(· | x_<n)),

where G are the positions whose next token was generated (the prompt's own tokens are not predicted),
teacher-forced: both models read the same trace, as in the sweep's proxy (probe/teacher.py). Greedy with
re-scoring: round r removes, of the layers still present, the one whose removal (together with the r−1
already chosen) gives the lowest D; every candidate's D of every round is recorded. The reference is
always the original model, never the previous round's. Costs, per round, one pass of the original and one
of each remaining candidate over the traces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from layerprobe.errors import UserError
from layerprobe.models.hooks import eval_mode
from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.scores import iter_batches, pad_token_id
from layerprobe.prune.surgery import drop_layers


def trace_documents(calibration: Any, seq_len: int) -> tuple[list[list[int]], list[int]]:
    """(token ids truncated to seq_len, prompt length) of each trace of a traces calibration."""
    ids = getattr(calibration, "token_ids", None)
    starts = getattr(calibration, "prompt_lengths", None)
    if getattr(calibration, "source", None) != "traces" or ids is None or starts is None:
        raise UserError(
            "--method trace-kl reads the model's own reasoning traces: use --calib-traces N (not --calib / --calib-dataset)"
        )
    docs, lens = [], []
    for x, p in zip(ids, starts):
        x = list(x)[:seq_len]
        if len(x) > p:  # at least one generated token inside the window
            docs.append(x)
            lens.append(p)
    if not docs:
        raise UserError(f"--method trace-kl: no trace has a generated token within --seq-len {seq_len}")
    return docs, lens


def mean_trace_kl(
    base: LoadedModel, candidates: list[LoadedModel], docs: list[list[int]], prompt_lens: list[int], batch_size: int = 8
) -> list[float]:
    """D(C) for every candidate (module docstring): mean over traces of the mean KL over generated positions."""
    sums = torch.zeros(len(candidates), dtype=torch.float64)
    pad = pad_token_id(base)
    models = [base.model, *(c.model for c in candidates)]
    with torch.inference_mode():
        for m in models:
            m.eval()
        for input_ids, mask, lengths, chunk in iter_batches(docs, batch_size, pad, base.device):
            lp_base = torch.log_softmax(base.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits.float(), -1)
            p_base = lp_base.exp()
            for ci, cand in enumerate(candidates):
                lp = torch.log_softmax(cand.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits.float(), -1)
                kl = (p_base * (lp_base - lp)).sum(-1)  # (B, T): position t predicts token t + 1
                for row, k in enumerate(chunk):
                    n, p = int(lengths[row]), prompt_lens[k]
                    sums[ci] += float(kl[row, p - 1 : n - 1].double().mean())
                del lp, kl
    return [float(s) / len(docs) for s in sums]


def greedy_trace_kl(
    loaded: LoadedModel,
    calibration: Any,
    n: int,
    *,
    seq_len: int = 256,
    batch_size: int = 8,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[list[int], dict[str, Any]]:
    """The n original layers to remove (in the order chosen) and the record of every round."""
    docs, prompt_lens = trace_documents(calibration, seq_len)
    chosen: list[int] = []
    rounds = []
    steps = sum(loaded.n_layers - r for r in range(n))
    done = 0
    with eval_mode(loaded.model):
        for _r in range(n):
            cands = [orig for orig in loaded.layer_map if orig not in chosen]
            models = [drop_layers(loaded, [*chosen, c], method="trace-kl-candidate") for c in cands]
            kls = mean_trace_kl(loaded, models, docs, prompt_lens, batch_size)
            scores = dict(zip(cands, kls))
            best = min(cands, key=lambda c: (scores[c], c))
            chosen.append(best)
            rounds.append({"removed_before": sorted(chosen[:-1]), "kl": scores, "chosen": best, "kl_chosen": scores[best]})
            done += len(cands)
            if progress is not None:
                progress(done, steps)
    record = {
        "n_drop": n,
        "order": list(chosen),
        "rounds": rounds,
        "kl_single": rounds[0]["kl"] if rounds else {},
        "n_traces": len(docs),
        "n_positions": sum(len(d) - p for d, p in zip(docs, prompt_lens)),
        "positions": "generated tokens of the model's own traces (teacher-forced), KL(original || candidate), nats",
    }
    return chosen, record
