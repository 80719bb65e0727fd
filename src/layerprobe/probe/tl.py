"""Optional TransformerLens adapter (extra `layerprobe[tl]`, transformer-lens 4.x).

`boot_bridge(loaded)` wraps an already-loaded HF model in a TransformerLens `TransformerBridge`
offline (`TransformerBridge.boot_transformers(name, hf_model=..., tokenizer=...)`) and
`tl_layer_stats` computes layerprobe's per-layer statistics from `blocks.{i}.hook_resid_pre/post`
with `run_with_cache` on a short input, for deep dives and for cross-checking the streaming probe.

Costs and side effects, as observed with transformer-lens 4.3:
- booting replaces the model's submodules by bridge wrappers and switches it to eager attention.
  `boot_bridge` therefore boots on a module copy that SHARES the weights (no extra parameter
  memory), so the LoadedModel the caller holds is left untouched and keeps its attention kernel;
- eager attention materialises (heads × T × T) scores per layer and `run_with_cache` keeps the
  cached activations of every position: memory grows with T², T·L·H — short inputs only;
- statistics are computed for every position of the input at once (no generation).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from layerprobe.data.probes import probes
from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.probe.columns import StepInputs, column_arrays, probe_rows
from layerprobe.probe.lens import model_softcap


def _require_tl() -> Any:
    try:
        from transformer_lens.model_bridge import TransformerBridge
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise UserError("the TransformerLens adapter needs the extra: pip install 'layerprobe[tl]'") from exc
    return TransformerBridge


def _shared_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of the module tree (and config) whose parameters and buffers are the originals."""
    memo: dict[int, Any] = {id(t): t for t in model.parameters()}
    memo.update({id(t): t for t in model.buffers()})
    return copy.deepcopy(model, memo)


def boot_bridge(loaded: LoadedModel, *, share_weights: bool = True) -> Any:
    """A TransformerBridge over `loaded`'s model, booted offline with its tokenizer.

    With share_weights (default) the bridge wraps a copy of the module tree sharing the weights, and
    `loaded.model` is not modified; with share_weights=False it wraps `loaded.model` itself, which
    is then rewired by TransformerLens (eager attention, bridge modules) for good."""
    bridge_cls = _require_tl()
    model = _shared_copy(loaded.model) if share_weights else loaded.model
    tok = loaded.tokenizer
    if tok is not None:
        # TransformerLens re-loads the tokenizer by name to add a BOS token unless it already does;
        # offline and for tokenizers built in memory that fails, so hand it a copy that says it does
        # (the adapter feeds token ids, never text, so BOS handling does not matter here).
        tok = copy.copy(tok)
        tok.init_kwargs = dict(tok.init_kwargs, name_or_path=getattr(tok, "name_or_path", "") or "", add_bos_token=True)
    return bridge_cls.boot_transformers(loaded.name, hf_model=model, tokenizer=tok, device=str(loaded.device), dtype=loaded.dtype)


def tl_layer_stats(
    loaded: LoadedModel,
    input_ids: Sequence[int] | torch.Tensor,
    next_ids: Sequence[int] | None = None,
    *,
    bridge: Any = None,
    lens: bool = True,
    lens_topk: int | None = None,
) -> dict[str, np.ndarray]:
    """Per-position, per-layer statistics of one sequence through TransformerLens.

    Returns (T, L) float32 arrays block_influence, norm, jsd, entropy, top1_agree and an int32 rank
    (and the columns of any other registered probe; without the lens, only the columns that do not
    read it), where row t is position t of `input_ids` and rank is that of next_ids[t] (default: the
    next input token; the last position's rank is −1 unless next_ids gives it). Same definitions as
    LayerProbe: row P−1+n of prompt + trace[:-1] equals step n of a captured trace."""
    if bridge is None:
        bridge = boot_bridge(loaded)
    ids = torch.as_tensor(input_ids, dtype=torch.long).view(1, -1).to(loaded.device)
    T = ids.shape[1]
    if next_ids is None:
        nxt = ids[0, 1:].tolist() + [-1]
    else:
        nxt = [int(t) for t in next_ids]
        if len(nxt) != T:
            raise ValueError("next_ids must have one entry per input position")
    L = int(bridge.cfg.n_layers)
    names = {"blocks.0.hook_resid_pre"} | {f"blocks.{i}.hook_resid_post" for i in range(L)}
    with torch.inference_mode():
        _, cache = bridge.run_with_cache(ids, names_filter=lambda n: n in names)
        raw = torch.stack(
            [cache["blocks.0.hook_resid_pre"][0]] + [cache[f"blocks.{i}.hook_resid_post"][0] for i in range(L)], dim=1
        )
        tok = torch.tensor([max(t, 0) for t in nxt], dtype=torch.long, device=raw.device)
        inp = StepInputs(raw, tok, bridge.ln_final, bridge.unembed, model_softcap(loaded.model), lens_topk)  # raw: (T, L+1, H)
        specs = probes()
        arr = probe_rows(inp, list(range(T)) if lens else None, specs).cpu().numpy()  # (T, C, L)
    out = column_arrays(arr, specs)
    for p in specs:
        for c in p.columns:
            if p.lens and not lens:
                del out[c.name]
            elif c.kind == "rank":
                out[c.name][np.asarray(nxt) < 0] = -1
    return out
