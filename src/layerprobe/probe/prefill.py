"""Probes by prefill: a trace's per-token, per-layer statistics from forward passes over prompt + trace.

A model's probe values on a trace do not depend on how the trace was produced: row n of the live
probe is the forward pass whose last position produced trace[n], i.e. position P − 1 + n of the
sequence prompt + trace[:-1] (P = prompt length). Running that sequence through the model and
reducing every position to the same scalars gives the same `TraceLayers` as capturing during
generation (equal up to floating-point rounding; tested). So traces from any engine (vLLM,
lm-evaluation-harness, s1's scripts) can be probed afterwards, at the cost of one prefill per trace.

Short traces go through the model several at a time (right-padded: a causal model's outputs at real
positions do not depend on padding after them); a trace longer than `chunk` positions goes alone, in
chunks with the KV cache carried across them. An out-of-memory error halves the batch, then the chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from layerprobe.data.probes import probes
from layerprobe.errors import UserError
from layerprobe.models.hooks import cache_kwarg, eval_mode, last_logits_kwarg, layer_hooks
from layerprobe.models.loaded import LoadedModel
from layerprobe.models.memory import free_memory, is_oom
from layerprobe.probe.columns import StepInputs, n_columns, probe_rows, trace_layers
from layerprobe.probe.layer_files import TraceLayers
from layerprobe.probe.lens import model_softcap

MIN_CHUNK = 64


@dataclass(frozen=True)
class PrefillItem:
    """One trace to probe: the prompt's token ids and everything the model produced after it."""

    key: Any
    prompt_ids: Sequence[int]
    trace_ids: Sequence[int]


class _Rows:
    """The (T, C, L) probe array of one trace (probe.columns), filled a block of positions at a time."""

    def __init__(self, loaded: LoadedModel, item: PrefillItem, lens: bool, lens_every: int) -> None:
        self.loaded, self.lens, self.lens_every = loaded, lens, lens_every
        self.prompt = [int(t) for t in item.prompt_ids]
        self.trace = [int(t) for t in item.trace_ids]
        self.key = item.key
        if not self.prompt:
            raise UserError("probing by prefill needs a non-empty prompt (its last position predicts the first trace token)")
        if not self.trace:
            raise UserError("probing by prefill needs a non-empty trace")
        self.probes = probes()
        self.stats = np.full((len(self.trace), n_columns(self.probes), len(loaded.layers)), np.nan, dtype=np.float32)
        self.softcap = model_softcap(loaded.model)

    @property
    def seq(self) -> list[int]:
        """The positions fed to the model: prompt + trace[:-1] (the last trace token predicts nothing we keep)."""
        return self.prompt + self.trace[:-1]

    def fill(self, n0: int, raw: torch.Tensor) -> None:
        """Rows n0 .. n0+k of the trace from raw hidden states (k, L+1, H) in model dtype: the input of
        the first layer, then every layer's output, at the positions that predicted those rows."""
        k = raw.shape[0]
        need = [j for j in range(k) if (n0 + j) % self.lens_every == 0] if self.lens else None
        tok = torch.tensor(self.trace[n0 : n0 + k], dtype=torch.long, device=raw.device)
        inp = StepInputs(raw, tok, self.loaded.final_norm, self.loaded.unembed, self.softcap)
        self.stats[n0 : n0 + k] = probe_rows(inp, need, self.probes).cpu().numpy()

    def result(self) -> TraceLayers:
        return trace_layers(
            self.stats,
            key=self.key,
            layers=self.loaded.layer_map,
            tokens=self.trace,
            lens="full" if self.lens else "none",
            lens_every=self.lens_every,
            n_layers_original=self.loaded.n_layers_original,
            specs=self.probes,
        )


def _capture(loaded: LoadedModel, ids: torch.Tensor, **forward_kw: Any) -> torch.Tensor:
    """Hidden states (B, S, L+1, H) of one forward pass: the first layer's input, then every layer's output."""
    n_layers = len(loaded.layers)
    captured: dict[int, torch.Tensor] = {}

    def on_input(x: torch.Tensor) -> None:
        captured[-1] = x

    def on_output(i: int, _x_in: torch.Tensor, x_out: torch.Tensor) -> None:
        captured[i] = x_out

    with layer_hooks(loaded, on_output, on_input=on_input):
        loaded.model(input_ids=ids, **forward_kw, **last_logits_kwarg(loaded.model))  # the logits are not used
    return torch.stack([captured[i] for i in range(-1, n_layers)], dim=2)


def _chunked(loaded: LoadedModel, rows: _Rows, chunk: int) -> None:
    """One long trace in chunks of `chunk` positions, the KV cache carried across them."""
    from transformers import DynamicCache

    seq, P = rows.seq, len(rows.prompt)
    cache = DynamicCache(config=loaded.model.config)
    for start in range(0, len(seq), chunk):
        stop = min(start + chunk, len(seq))
        ids = torch.tensor([seq[start:stop]], dtype=torch.long, device=loaded.device)
        first = max(start, P - 1)
        if first >= stop:  # a chunk of prompt only: run it for the cache
            loaded.model(input_ids=ids, use_cache=True, **cache_kwarg(loaded.model, cache), **last_logits_kwarg(loaded.model))
            continue
        h = _capture(loaded, ids, use_cache=True, **cache_kwarg(loaded.model, cache))  # (1, S, L+1, H)
        rows.fill(first - (P - 1), h[0, first - start :])


def _batched(loaded: LoadedModel, batch: Sequence[_Rows]) -> None:
    """Several traces that fit one chunk in one right-padded forward pass."""
    seqs = [r.seq for r in batch]
    S = max(len(s) for s in seqs)
    pad = getattr(loaded.tokenizer, "pad_token_id", None) or 0
    ids = torch.full((len(seqs), S), int(pad), dtype=torch.long, device=loaded.device)
    mask = torch.zeros((len(seqs), S), dtype=torch.long, device=loaded.device)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[b, : len(s)] = 1
    h = _capture(loaded, ids, attention_mask=mask, use_cache=False)  # (B, S, L+1, H)
    for b, r in enumerate(batch):
        P = len(r.prompt)
        r.fill(0, h[b, P - 1 : P - 1 + len(r.trace)])


@torch.inference_mode()
def prefill_many(
    loaded: LoadedModel,
    items: Sequence[PrefillItem],
    *,
    lens: bool = True,
    lens_every: int = 1,
    batch_size: int = 8,
    chunk: int = 2048,
    on_oom: Callable[[int, int], None] | None = None,
) -> Iterator[TraceLayers]:
    """The TraceLayers of every item (in order of length, shortest first; each carries its item's key).
    Traces of at most `chunk` positions go `batch_size` at a time; an out-of-memory error halves the
    batch, at batch 1 the chunk (not below 64), and retries; `on_oom(batch, chunk)` hears of it."""
    if lens_every < 1 or chunk < 1 or batch_size < 1:
        raise UserError("lens_every, chunk and batch_size must be >= 1")
    todo = sorted((_Rows(loaded, it, lens, lens_every) for it in items), key=lambda r: len(r.seq))
    with eval_mode(loaded.model):
        while todo:
            short = [r for r in todo[:batch_size] if len(r.seq) <= chunk]
            group = short if short else todo[:1]
            try:
                if len(group) == 1 and len(group[0].seq) > chunk:
                    _chunked(loaded, group[0], chunk)
                else:
                    _batched(loaded, group)
            except Exception as exc:
                if not is_oom(exc) or (batch_size == 1 and chunk <= MIN_CHUNK):
                    raise
                free_memory()
                if batch_size > 1:
                    batch_size //= 2
                else:
                    chunk = max(MIN_CHUNK, chunk // 2)
                if on_oom is not None:
                    on_oom(batch_size, chunk)
                continue
            for r in group:
                yield r.result()
            todo = todo[len(group) :]


def prefill_trace_layers(
    loaded: LoadedModel,
    prompt_ids: Sequence[int],
    trace_ids: Sequence[int],
    *,
    lens: bool = True,
    lens_every: int = 1,
    chunk: int = 2048,
    key: Any = "",
) -> TraceLayers:
    """The TraceLayers of one trace (`trace_ids`: everything the model produced after the prompt, as
    the live probe's `tokens`)."""
    (tl,) = prefill_many(loaded, [PrefillItem(key, prompt_ids, trace_ids)], lens=lens, lens_every=lens_every, chunk=chunk)
    return tl
