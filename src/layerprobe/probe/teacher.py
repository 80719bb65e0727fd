"""Teacher-forced comparison: a pruned model run over the base model's own trace.

Both models read the same token sequence (prompt + trace) in chunks, one forward pass per model per
chunk with each model's KV cache carried across chunks, so the cost is that of reading the trace
once per model instead of generating it again. Position n (n = 0 … T−1) is the position whose
next-token distribution predicts trace[n] (the same indexing as the probe's step n):

- kl[n] = KL(p_base ‖ p_pruned) of the two models' next-token distributions, float32, in nats;
- drift[n, j] = JSD between the logit lens of the base and of the pruned model at the output of the
  matched ORIGINAL layer layers[j] (layers present in both models; each model's own final norm and
  unembedding), in nats;
- onset = the first position n with kl[n … n+window−1] all > threshold (None if none; a full window
  is required, so a trace shorter than `window` has no onset).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.probe.lens import jsd_logprobs, kl_logprobs, log_probs, model_softcap
from layerprobe.probe.store import SCHEMA_VERSION, _check_schema
from layerprobe.prune.scores import _EvalMode, _first_tensor

THRESHOLD_DEFAULT = 0.1  # nats
WINDOW_DEFAULT = 16  # positions
# positions per lens block in the drift computation: keeps (block × vocab) float32 tensors small
_LENS_ELEMENTS = 1 << 24


@dataclass
class TeacherForced:
    """Per-position divergence of a pruned model from the base along one base trace."""

    kl: np.ndarray  # (T,) float32
    drift: np.ndarray  # (T, M) float32
    layers: np.ndarray  # (M,) int16 original indices of the matched layers
    tokens: np.ndarray  # (T,) int32 the trace
    threshold: float
    window: int
    onset: int | None
    chunk: int = 512
    key: str = ""

    @property
    def n_tokens(self) -> int:
        return int(self.kl.shape[0])


def kl_onset(kl: np.ndarray, threshold: float = THRESHOLD_DEFAULT, window: int = WINDOW_DEFAULT) -> int | None:
    """First n with kl[n : n + window] all > threshold; None if there is none."""
    if window < 1:
        raise ValueError("window must be >= 1")
    above = np.asarray(kl, dtype=np.float64) > threshold
    if above.size < window:
        return None
    run = np.convolve(above.astype(np.int64), np.ones(window, dtype=np.int64), mode="valid")  # run[n] = sum above[n:n+w]
    hits = np.flatnonzero(run == window)
    return int(hits[0]) if hits.size else None


class _Reader:
    """Runs one model over a sequence chunk by chunk, keeping its KV cache."""

    def __init__(self, loaded: LoadedModel, positions: Sequence[int]) -> None:
        from transformers import DynamicCache

        self.loaded = loaded
        self.cache = DynamicCache(config=loaded.model.config)
        self.pos = list(positions)  # current layer positions whose outputs are kept
        self.softcap = model_softcap(loaded.model)
        self._keep: slice | None = None
        self._outs: dict[int, torch.Tensor] = {}

    def run(self, ids: torch.Tensor, keep: slice) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Forward one chunk (1, n); returns float32 next-token log-probs at `keep` (k, V) and the
        kept positions' raw outputs of the matched layers [(k, H)]."""
        layers = self.loaded.layers
        handles = []

        def make(i: int):
            def hook(_m: Any, _a: Any, output: Any) -> None:
                self._outs[i] = _first_tensor(output)[0, keep].clone()

            return hook

        try:
            for i in self.pos:
                handles.append(layers[i].register_forward_hook(make(i)))
            out = self.loaded.model(input_ids=ids, past_key_values=self.cache, use_cache=True)
        finally:
            for h in handles:
                h.remove()
        logits = out.logits[0, keep].float()  # the model's forward has already applied any final soft-cap
        lp = logits.sub_(torch.logsumexp(logits, -1, keepdim=True))
        outs = [self._outs.pop(i) for i in self.pos]
        return lp, outs

    def lens(self, h: torch.Tensor) -> torch.Tensor:
        return log_probs(h, self.loaded.final_norm, self.loaded.unembed, self.softcap)


def teacher_forced(
    base: LoadedModel,
    pruned: LoadedModel,
    prompt_ids: Sequence[int],
    trace_ids: Sequence[int],
    chunk: int = 512,
    threshold: float = THRESHOLD_DEFAULT,
    window: int = WINDOW_DEFAULT,
    *,
    drift: bool = True,
    key: str = "",
) -> TeacherForced:
    """Per-position KL(p_base ‖ p_pruned) and layer-wise lens drift of `pruned` along `trace_ids`
    (the base model's trace after `prompt_ids`, e.g. GenResult.all_ids). See the module docstring."""
    if chunk < 1:
        raise UserError("chunk must be >= 1")
    prompt_ids, trace_ids = [int(t) for t in prompt_ids], [int(t) for t in trace_ids]
    if not prompt_ids:
        raise UserError("teacher forcing needs a non-empty prompt (its last token predicts the first trace token)")
    P, T = len(prompt_ids), len(trace_ids)
    seq = prompt_ids + trace_ids[:-1]  # position P−1+n predicts trace[n]
    matched = sorted(set(base.layer_map) & set(pruned.layer_map)) if drift else []
    readers = [
        _Reader(base, [base.layer_map.index(o) for o in matched]),
        _Reader(pruned, [pruned.layer_map.index(o) for o in matched]),
    ]
    kl = np.zeros(T, dtype=np.float32)
    dr = np.zeros((T, len(matched)), dtype=np.float32)
    device_b, device_p = base.device, pruned.device
    with _EvalMode(base.model), _EvalMode(pruned.model), torch.inference_mode():
        for start in range(0, len(seq), chunk):
            stop = min(start + chunk, len(seq))
            first = max(start, P - 1)  # first position of this chunk that predicts a trace token
            keep = slice(first - start, max(first, stop) - start)  # empty inside the prompt
            ids = torch.tensor([seq[start:stop]], dtype=torch.long)
            lp_b, out_b = readers[0].run(ids.to(device_b), keep)
            lp_p, out_p = readers[1].run(ids.to(device_p), keep)
            n0, k = first - (P - 1), lp_b.shape[0]
            if k == 0:
                continue
            kl[n0 : n0 + k] = kl_logprobs(lp_b, lp_p.to(lp_b.device)).cpu().numpy()
            del lp_b, lp_p
            if matched:
                vocab = base.model.config.vocab_size
                block = max(1, _LENS_ELEMENTS // max(1, vocab))
                for j in range(len(matched)):
                    for s in range(0, k, block):
                        lb = readers[0].lens(out_b[j][s : s + block])
                        lq = readers[1].lens(out_p[j][s : s + block]).to(lb.device)
                        dr[n0 + s : n0 + s + lb.shape[0], j] = jsd_logprobs(lb, lq).cpu().numpy()
    return TeacherForced(
        kl=kl,
        drift=dr,
        layers=np.asarray(matched, dtype=np.int16),
        tokens=np.asarray(trace_ids, dtype=np.int32),
        threshold=float(threshold),
        window=int(window),
        onset=kl_onset(kl, threshold, window),
        chunk=int(chunk),
        key=str(key),
    )


def save_teacher_forced(path: str | Path, tf: TeacherForced) -> Path:
    """Compressed .npz: schema_version, kind="teacher_forced", key, kl (T,) float16, drift (T, M)
    float16, layers (M,) int16, tokens (T,) int32, threshold, window, onset (−1 = none), chunk."""
    path = Path(path)
    with open(path, "wb") as fh:
        np.savez_compressed(
            fh,
            schema_version=np.int32(SCHEMA_VERSION),
            kind=np.array("teacher_forced"),
            key=np.array(tf.key),
            kl=np.asarray(tf.kl, dtype=np.float16),
            drift=np.asarray(tf.drift, dtype=np.float16),
            layers=np.asarray(tf.layers, dtype=np.int16),
            tokens=np.asarray(tf.tokens, dtype=np.int32),
            threshold=np.float64(tf.threshold),
            window=np.int32(tf.window),
            onset=np.int64(-1 if tf.onset is None else tf.onset),
            chunk=np.int32(tf.chunk),
        )
    return path


def load_teacher_forced(path: str | Path) -> TeacherForced:
    """Read a file written by `save_teacher_forced` (kl and drift come back as float32)."""
    path = Path(path)
    with np.load(path, allow_pickle=False) as d:
        _check_schema(d, "teacher_forced", path)
        onset = int(d["onset"])
        return TeacherForced(
            kl=np.asarray(d["kl"], dtype=np.float32),
            drift=np.asarray(d["drift"], dtype=np.float32),
            layers=np.asarray(d["layers"], dtype=np.int16),
            tokens=np.asarray(d["tokens"], dtype=np.int32),
            threshold=float(d["threshold"]),
            window=int(d["window"]),
            onset=None if onset < 0 else onset,
            chunk=int(d["chunk"]),
            key=str(d["key"]),
        )
