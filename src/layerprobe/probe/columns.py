"""The probe array, built once from the declarations (layerprobe.data.probes) for the live probe
(probe.hooks), probing by prefill (probe.prefill) and the TransformerLens adapter (probe.tl).

`probe_rows` turns one forward pass's residual stream into the (rows, C, layers) float32 array of every
registered probe's columns (C = their number; 6 for the built-in probes), `trace_layers` turns a
trace's (T, C, L) array into its `TraceLayers`, `column_arrays` into named arrays. The built-in
probes' compute functions are `residual` and `logit_lens` below.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from layerprobe.data.probes import Column, Probe, probes
from layerprobe.probe.layer_files import TraceLayers
from layerprobe.probe.lens import lens_stats


@dataclass(frozen=True)
class StepInputs:
    """What a probe sees of R rows (positions) of one forward pass."""

    resid: torch.Tensor
    """(R, L+1, H) in the model's dtype: the first layer's input, then every layer's output."""
    tokens: torch.Tensor
    """(R,) long: the token each row produced (the one fed next; what the lens ranks)."""
    final_norm: nn.Module
    """The model's final norm."""
    unembed: nn.Module
    """The model's unembedding."""
    softcap: float | None = None
    """Final-logit soft-capping of the model, if any."""
    lens_topk: int | None = None
    """Restrict the logit lens to the final layer's top-K tokens (None: full vocabulary)."""

    def rows(self, idx: Sequence[int]) -> StepInputs:
        """The same inputs for the rows `idx` only."""
        sel = torch.as_tensor(list(idx), dtype=torch.long, device=self.resid.device)
        return StepInputs(self.resid[sel], self.tokens[sel], self.final_norm, self.unembed, self.softcap, self.lens_topk)


def residual(inp: StepInputs) -> torch.Tensor:
    """(R, 2, L): block influence 1 − cos(x_in, x_out) and ‖x_out‖₂, in float32."""
    x = inp.resid.float()
    x_in, x_out = x[:, :-1], x[:, 1:]
    bi = 1.0 - F.cosine_similarity(x_in, x_out, dim=-1)  # (R, L)
    norm = torch.linalg.vector_norm(x_out, dim=-1)
    return torch.stack([bi, norm], dim=1)


def logit_lens(inp: StepInputs) -> torch.Tensor:
    """(R, 4, L): lens JSD to the last layer, entropy, top-1 agreement and the rank of the row's token
    (probe.lens, one stacked matmul)."""
    return lens_stats(inp.resid[:, 1:], inp.tokens, inp.final_norm, inp.unembed, topk=inp.lens_topk, softcap=inp.softcap)


def _compute(probe: Probe) -> Callable[[StepInputs], torch.Tensor]:
    if callable(probe.compute):
        return probe.compute
    module, _, name = probe.compute.partition(":")
    fn: Callable[[StepInputs], torch.Tensor] = getattr(importlib.import_module(module), name)
    return fn


def _run(probe: Probe, inp: StepInputs) -> torch.Tensor:
    """`probe`'s (R, its columns, L) values on `inp`; ValueError naming the probe for another shape."""
    got = _compute(probe)(inp)
    want = (inp.resid.shape[0], len(probe.columns), inp.resid.shape[1] - 1)
    if tuple(got.shape) != want:
        raise ValueError(f"probe '{probe.name}' returned shape {tuple(got.shape)}, expected {want} (rows, columns, layers)")
    return got


def n_columns(specs: Sequence[Probe] | None = None) -> int:
    """C: the number of columns of the probe array."""
    return sum(len(p.columns) for p in (probes() if specs is None else specs))


def probe_rows(inp: StepInputs, lens_rows: Sequence[int] | None, specs: Sequence[Probe] | None = None) -> torch.Tensor:
    """(R, C, L) float32 on the inputs' device: every probe's columns, in declaration order.

    lens_rows: the rows where the probes that read the logit lens run (None: the lens is off; those
    columns stay NaN). specs: the probes (default: the registered ones; a caller filling one array
    over many steps passes the same tuple every time)."""
    specs = probes() if specs is None else tuple(specs)
    R, L = inp.resid.shape[0], inp.resid.shape[1] - 1
    out = torch.full((R, n_columns(specs), L), float("nan"), dtype=torch.float32, device=inp.resid.device)
    need = None if lens_rows is None else list(lens_rows)
    c0 = 0
    for p in specs:
        c1 = c0 + len(p.columns)
        if not p.lens:
            out[:, c0:c1] = _run(p, inp)
        elif need:
            if len(need) == R:
                out[:, c0:c1] = _run(p, inp)
            else:
                out[need, c0:c1] = _run(p, inp.rows(need))
        c0 = c1
    return out


def _columns(specs: Sequence[Probe]) -> list[tuple[int, Column, bool]]:
    """(index in the array, column, read from the lens) of every column of `specs`."""
    out, i = [], 0
    for p in specs:
        for c in p.columns:
            out.append((i, c, p.lens))
            i += 1
    return out


def column_arrays(arr: np.ndarray, specs: Sequence[Probe] | None = None) -> dict[str, np.ndarray]:
    """The (T, L) array of every column of a (T, C, L) probe array, contiguous: float columns float32
    (NaN where not computed), rank columns int32 (−1 where not computed)."""
    specs = probes() if specs is None else tuple(specs)
    out: dict[str, np.ndarray] = {}
    for i, c, _ in _columns(specs):
        a = arr[:, i]
        out[c.name] = (
            np.where(np.isnan(a), -1, a).astype(np.int32) if c.kind == "rank" else np.ascontiguousarray(a, dtype=np.float32)
        )
    return out


def trace_layers(
    arr: np.ndarray,
    *,
    key: Any,
    layers: Any,
    tokens: Any,
    lens: str,
    lens_every: int,
    n_layers_original: int | None,
    specs: Sequence[Probe] | None = None,
) -> TraceLayers:
    """The TraceLayers of one trace from its (T, C, L) probe array (row n = step n). The steps where
    the lens ran are those where the first lens column of the last layer is not NaN."""
    specs = probes() if specs is None else tuple(specs)
    cols = column_arrays(arr, specs)
    first_lens = next((i for i, _, from_lens in _columns(specs) if from_lens), None)
    if lens != "none" and first_lens is not None and arr.shape[0]:
        lens_pos = np.flatnonzero(~np.isnan(arr[:, first_lens, -1]))
    else:
        lens_pos = np.zeros(0, dtype=np.int64)
    return TraceLayers.from_columns(
        cols,
        key=key,
        layers=np.asarray(layers, dtype=np.int16),
        tokens=np.asarray(tokens, dtype=np.int32),
        lens=lens,
        lens_every=int(lens_every),
        lens_positions=lens_pos.astype(np.int32),
        n_layers_original=n_layers_original,
    )
