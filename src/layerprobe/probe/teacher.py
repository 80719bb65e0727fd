"""Teacher-forced comparison: a pruned model run over the base model's own trace.

Both models read the same token sequence (prompt + trace) in chunks, one forward pass per model per
chunk with each model's KV cache carried across chunks, so the cost is that of reading the trace
once per model instead of generating it again. Position n (n = 0 … T−1) is the position whose
next-token distribution predicts trace[n] (the same indexing as the probe's step n):

- kl[n] = KL(p_base ‖ p_pruned) of the two models' next-token distributions, float32, in nats;
- drift[n, j] = JSD between the logit lens of the base and of the pruned model at the output of the
  matched ORIGINAL layer layers[j] (layers present in both models; each model's own final norm and
  unembedding), in nats;
- jsd_to_base[n, j] = JSD between the BASE model's next-token distribution and the pruned model's
  logit lens at layers[j], in nats: how far each of the pruned model's layers is from what the base
  model finally predicts (its own lens, against its own possibly broken output, can look settled);
- top1[n], base_top1[n] = the pruned and the base model's most likely next token;
- onset = the first position n with kl[n … n+w−1] all > threshold (None if none), where the window
  w = min(window, max(2, T // 4)) shrinks for short traces (a 16-token window would never fit in a
  10-token toy trace); the w used is stored as the record's `window`.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict

import numpy as np
import torch

from layerprobe.errors import UserError
from layerprobe.models.hooks import cache_kwarg, eval_mode, layer_hooks
from layerprobe.models.loaded import LoadedModel
from layerprobe.probe.layer_files import SCHEMA_VERSION, opened_npz
from layerprobe.probe.lens import jsd_logprobs, kl_logprobs, log_probs, model_softcap

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
    jsd_to_base: np.ndarray | None = None  # (T, M) float32
    top1: np.ndarray | None = None  # (T,) int32 pruned argmax
    base_top1: np.ndarray | None = None  # (T,) int32 base argmax

    @property
    def n_tokens(self) -> int:
        return int(self.kl.shape[0])


def effective_window(window: int, n_tokens: int) -> int:
    """The onset window used for a trace of `n_tokens`: `window`, or a quarter of the trace (at least 2)
    when the trace is shorter than four windows."""
    return min(int(window), max(2, n_tokens // 4))


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

    def run(self, ids: torch.Tensor, keep: slice) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Forward one chunk (1, n); returns float32 next-token log-probs at `keep` (k, V) and the
        kept positions' raw outputs of the matched layers {original layer: (k, H)}."""
        outs: dict[int, torch.Tensor] = {}

        def hook(i: int, _x_in: torch.Tensor, x_out: torch.Tensor) -> None:
            outs[self.loaded.layer_map[i]] = x_out[0, keep].clone()

        with layer_hooks(self.loaded, hook, positions=self.pos):
            out = self.loaded.model(input_ids=ids, use_cache=True, **cache_kwarg(self.loaded.model, self.cache))
        logits = out.logits[0, keep].float()  # the model's forward has already applied any final soft-cap
        lp = logits.sub_(torch.logsumexp(logits, -1, keepdim=True))
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
    return teacher_forced_many(base, [pruned], prompt_ids, trace_ids, chunk, threshold, window, drift=drift, key=key)[0]


def teacher_forced_many(
    base: LoadedModel,
    pruned: Sequence[LoadedModel],
    prompt_ids: Sequence[int],
    trace_ids: Sequence[int],
    chunk: int = 512,
    threshold: float = THRESHOLD_DEFAULT,
    window: int = WINDOW_DEFAULT,
    *,
    drift: bool = True,
    key: str = "",
) -> list[TeacherForced]:
    """`teacher_forced` for several pruned variants along one base trace, running the base model
    (and its logit lens) once for all of them."""
    if chunk < 1:
        raise UserError("chunk must be >= 1")
    prompt_ids, trace_ids = [int(t) for t in prompt_ids], [int(t) for t in trace_ids]
    if not prompt_ids:
        raise UserError("teacher forcing needs a non-empty prompt (its last token predicts the first trace token)")
    P, T = len(prompt_ids), len(trace_ids)
    seq = prompt_ids + trace_ids[:-1]  # position P−1+n predicts trace[n]
    matched = [sorted(set(base.layer_map) & set(p.layer_map)) if drift else [] for p in pruned]
    wanted = sorted(set().union(*map(set, matched))) if matched else []
    base_reader = _Reader(base, [base.layer_map.index(o) for o in wanted])
    readers = [_Reader(p, [p.layer_map.index(o) for o in m]) for p, m in zip(pruned, matched)]
    kl = [np.zeros(T, dtype=np.float32) for _ in pruned]
    dr = [np.zeros((T, len(m)), dtype=np.float32) for m in matched]
    tb = [np.zeros((T, len(m)), dtype=np.float32) for m in matched]
    top1 = [np.zeros(T, dtype=np.int32) for _ in pruned]
    base_top1 = np.zeros(T, dtype=np.int32)
    vocab = base.model.config.vocab_size
    block = max(1, _LENS_ELEMENTS // max(1, vocab))
    with ExitStack() as stack:
        for m in [base, *pruned]:
            stack.enter_context(eval_mode(m.model))
        stack.enter_context(torch.inference_mode())
        for start in range(0, len(seq), chunk):
            stop = min(start + chunk, len(seq))
            first = max(start, P - 1)  # first position of this chunk that predicts a trace token
            keep = slice(first - start, max(first, stop) - start)  # empty inside the prompt
            ids = torch.tensor([seq[start:stop]], dtype=torch.long)
            lp_b, out_b = base_reader.run(ids.to(base.device), keep)
            outs = [r.run(ids.to(p.device), keep) for r, p in zip(readers, pruned)]
            n0, k = first - (P - 1), lp_b.shape[0]
            if k == 0:
                continue
            base_top1[n0 : n0 + k] = lp_b.argmax(-1).cpu().numpy()
            for v, (lp_p, _) in enumerate(outs):
                lp_p = lp_p.to(lp_b.device)
                kl[v][n0 : n0 + k] = kl_logprobs(lp_b, lp_p).cpu().numpy()
                top1[v][n0 : n0 + k] = lp_p.argmax(-1).cpu().numpy()
            for o in wanted:
                users = [(v, m.index(o)) for v, m in enumerate(matched) if o in m]
                for s in range(0, k, block):
                    lb = base_reader.lens(out_b[o][s : s + block])
                    final_b = lp_b[s : s + block]
                    for v, j in users:
                        lq = readers[v].lens(outs[v][1][o][s : s + block]).to(lb.device)
                        dr[v][n0 + s : n0 + s + lb.shape[0], j] = jsd_logprobs(lb, lq).cpu().numpy()
                        tb[v][n0 + s : n0 + s + lb.shape[0], j] = jsd_logprobs(final_b, lq).cpu().numpy()
    return [
        TeacherForced(
            kl=kl[v],
            drift=dr[v],
            layers=np.asarray(matched[v], dtype=np.int16),
            tokens=np.asarray(trace_ids, dtype=np.int32),
            threshold=float(threshold),
            window=effective_window(window, T),
            onset=kl_onset(kl[v], threshold, effective_window(window, T)),
            chunk=int(chunk),
            key=str(key),
            jsd_to_base=tb[v],
            top1=top1[v],
            base_top1=base_top1.copy(),
        )
        for v in range(len(pruned))
    ]


class _OptionalArrays(TypedDict, total=False):
    """The arrays a teacher-forced file holds only when they were computed."""

    jsd_to_base: np.ndarray
    top1: np.ndarray
    base_top1: np.ndarray


def save_teacher_forced(path: str | Path, tf: TeacherForced) -> Path:
    """Compressed .npz, written atomically and durably: schema_version, kind="teacher_forced", key,
    kl (T,) float16, drift (T, M) float16, jsd_to_base (T, M) float16, layers (M,) int16, tokens (T,)
    int32, top1 / base_top1 (T,) int32, threshold, window, onset (−1 = none), chunk."""
    from layerprobe._io import write_atomic

    path = Path(path)

    extra: _OptionalArrays = {}
    if tf.jsd_to_base is not None:
        extra["jsd_to_base"] = np.asarray(tf.jsd_to_base, dtype=np.float16)
    if tf.top1 is not None:
        extra["top1"] = np.asarray(tf.top1, dtype=np.int32)
    if tf.base_top1 is not None:
        extra["base_top1"] = np.asarray(tf.base_top1, dtype=np.int32)

    def write(fh: Any) -> None:
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
            **extra,
        )

    return write_atomic(path, write)


def load_teacher_forced(path: str | Path) -> TeacherForced:
    """Read a file written by `save_teacher_forced` (kl and drift come back as float32); DamagedFile when
    it cannot be read."""
    with opened_npz(path, "teacher_forced") as d:
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
            jsd_to_base=np.asarray(d["jsd_to_base"], dtype=np.float32) if "jsd_to_base" in d else None,
            top1=np.asarray(d["top1"], dtype=np.int32) if "top1" in d else None,
            base_top1=np.asarray(d["base_top1"], dtype=np.int32) if "base_top1" in d else None,
        )
