"""How much a compression removes, said one way for every kind (docs/definitions.md#size).

The unit is the decoder layers' linear weights: every `nn.Linear` weight matrix inside the decoder
layers (attention q/k/v/o, MLP gate/up/down). Embeddings, the unembedding, norms and biases are not
counted in it (the norms and biases are recorded apart, in `decoder_params`). A request is one of

- `--sparsity F`: remove the fraction F (0 < F < 1) of those weights;
- `--match-layers K`: remove exactly as many as K decoder layers hold (K / L of them for a model whose
  layers are all the same size, which every supported family is);
- `--nm N:M`: in every block of M consecutive inputs of every row, keep N (the fraction removed is
  1 − N/M by construction).

A method that removes whole layers turns F into round(F · L) layers; a method that removes weights or
channels turns K into the fraction K / L. What a compression actually removed is counted on the model it
produced (`count_size`), never taken from the request.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel

#: Context length (tokens already in the KV cache) at which attention's share of the FLOPs is counted.
FLOPS_CONTEXT = 512

SPEED_NOTE = (
    "dense kernels: zeros from unstructured or N:M sparsity cost the same time as any other weight on a CPU "
    "(no sparse kernels); 2:4 gives speed only on GPUs whose kernels use it (NVIDIA Ampere and later, with "
    "a semi-structured sparse backend); fewer layers or narrower FFNs give speed everywhere"
)


def decoder_linears(loaded: LoadedModel) -> list[tuple[int, str, nn.Linear]]:
    """(current layer position, dotted name inside the layer, module) of every nn.Linear of the decoder layers."""
    out = []
    for pos, layer in enumerate(loaded.layers):
        for name, module in layer.named_modules():
            if isinstance(module, nn.Linear):
                out.append((pos, name, module))
    return out


@dataclass(frozen=True)
class SizeCount:
    """What one model holds, counted on its tensors."""

    n_layers: int
    decoder_params: int
    """Every parameter of the decoder layers (linear weights, biases, norms)."""
    linear_weights: int
    """Entries of the decoder layers' linear weight matrices (stored, zeros included)."""
    nonzero_linear_weights: int
    """Of those, the entries that are not exactly zero."""
    flops_per_token: float
    """Analytic forward FLOPs for one new token with dense kernels (every stored weight multiplied)."""
    flops_per_token_sparse: float
    """The same if every zero weight were skipped (what ideal sparse kernels would do)."""
    embedding_params: int
    """Input embedding plus unembedding (once when tied): not part of the size unit."""


def count_size(loaded: LoadedModel, context: int = FLOPS_CONTEXT) -> SizeCount:
    """Count `loaded`'s decoder parameters, linear weights and non-zeros, and its analytic FLOPs per token:
    2 · (linear weights) + 4 · L · heads · head_dim · context (scores and weighted values at `context`
    cached tokens) + 2 · hidden · vocab (the unembedding)."""
    linears = decoder_linears(loaded)
    linear = sum(m.weight.numel() for _, _, m in linears)
    nonzero = sum(int(torch.count_nonzero(m.weight.detach())) for _, _, m in linears)
    decoder = sum(p.numel() for layer in loaded.layers for p in layer.parameters())
    cfg = loaded.model.config
    heads = int(getattr(cfg, "num_attention_heads", 0) or 0)
    hidden = int(getattr(cfg, "hidden_size", 0) or 0)
    head_dim = int(getattr(cfg, "head_dim", None) or (hidden // heads if heads else 0))
    vocab = int(getattr(cfg, "vocab_size", 0) or 0)
    attn = 4.0 * loaded.n_layers * heads * head_dim * context
    head = 2.0 * hidden * vocab
    emb_in = loaded.model.get_input_embeddings()
    emb_out = loaded.unembed
    emb = sum(p.numel() for p in emb_in.parameters())
    if getattr(emb_out, "weight", None) is not getattr(emb_in, "weight", None):
        emb += sum(p.numel() for p in emb_out.parameters())
    return SizeCount(
        n_layers=loaded.n_layers,
        decoder_params=decoder,
        linear_weights=linear,
        nonzero_linear_weights=nonzero,
        flops_per_token=2.0 * linear + attn + head,
        flops_per_token_sparse=2.0 * nonzero + attn + head,
        embedding_params=emb,
    )


def size_record(model: LoadedModel, base: SizeCount, n_layers_original: int, context: int = FLOPS_CONTEXT) -> dict[str, Any]:
    """The size of `model` against the unpruned model's count `base` (the stored `VariantSize`)."""
    c = count_size(model, context)
    per_layer = base.linear_weights / max(1, n_layers_original)
    return {
        "n_layers": c.n_layers,
        "n_layers_base": n_layers_original,
        "decoder_params": c.decoder_params,
        "decoder_params_base": base.decoder_params,
        "linear_weights": c.linear_weights,
        "nonzero_linear_weights": c.nonzero_linear_weights,
        "linear_weights_base": base.linear_weights,
        "kept_fraction": c.nonzero_linear_weights / base.linear_weights if base.linear_weights else None,
        "removed_fraction": 1.0 - c.nonzero_linear_weights / base.linear_weights if base.linear_weights else None,
        "layers_removed_equivalent": (base.linear_weights - c.nonzero_linear_weights) / per_layer if per_layer else None,
        "flops_per_token": c.flops_per_token,
        "flops_per_token_sparse": c.flops_per_token_sparse,
        "flops_per_token_base": base.flops_per_token,
        "flops_context": context,
        "embedding_params": c.embedding_params,
    }


def recount(model: LoadedModel, compression: dict[str, Any], when: str) -> dict[str, Any]:
    """A compression record whose counted size is redone on `model`'s tensors now (e.g. after healing),
    against the unpruned model's numbers it already holds; `when` says when it was counted."""
    old = dict(compression.get("size") or {})
    c = count_size(model, int(old.get("flops_context") or FLOPS_CONTEXT))
    base = int(old.get("linear_weights_base") or 0)
    per_layer = base / int(old["n_layers_base"]) if old.get("n_layers_base") else None
    old.update(
        nonzero_linear_weights=c.nonzero_linear_weights,
        linear_weights=c.linear_weights,
        kept_fraction=c.nonzero_linear_weights / base if base else None,
        removed_fraction=1 - c.nonzero_linear_weights / base if base else None,
        layers_removed_equivalent=(base - c.nonzero_linear_weights) / per_layer if per_layer else None,
        flops_per_token_sparse=c.flops_per_token_sparse,
        counted=when,
    )
    return {**compression, "size": old}


@dataclass(frozen=True)
class SizeRequest:
    """How much to remove: exactly one of the three."""

    match_layers: int | None = None
    sparsity: float | None = None
    nm: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        given = [
            f
            for f, v in (("--match-layers", self.match_layers), ("--sparsity", self.sparsity), ("--nm", self.nm))
            if v is not None
        ]
        if len(given) != 1:
            raise UserError(
                f"{' and '.join(given)} are exclusive: say the size one way"
                if given
                else "no size given (--sparsity F, --match-layers K or --nm N:M)"
            )
        if self.sparsity is not None:
            check_sparsity(self.sparsity)
        if self.match_layers is not None:
            check_match_layers(self.match_layers)

    @property
    def label(self) -> str:
        """The size part of a variant name: '2' (match-layers 2, as shortgpt-2), 's0.15', '2of4'."""
        if self.match_layers is not None:
            return str(self.match_layers)
        if self.sparsity is not None:
            return f"s{self.sparsity:g}"
        assert self.nm is not None
        return f"{self.nm[0]}of{self.nm[1]}"

    def describe(self) -> str:
        if self.match_layers is not None:
            return f"the parameters of {self.match_layers} decoder layer{'s' if self.match_layers != 1 else ''}"
        if self.sparsity is not None:
            return f"{self.sparsity:.4g} of the decoder's linear weights"
        assert self.nm is not None
        return f"{self.nm[0]}:{self.nm[1]} (keep {self.nm[0]} of every {self.nm[1]} consecutive weights of a row)"

    def to_json(self) -> dict[str, Any]:
        if self.match_layers is not None:
            return {"match_layers": self.match_layers}
        if self.sparsity is not None:
            return {"sparsity": self.sparsity}
        assert self.nm is not None
        return {"nm": f"{self.nm[0]}:{self.nm[1]}"}

    def fraction(self, loaded: LoadedModel) -> float:
        """The fraction of `loaded`'s decoder linear weights to remove."""
        if self.nm is not None:
            return 1.0 - self.nm[0] / self.nm[1]
        if self.sparsity is not None:
            return self.sparsity
        assert self.match_layers is not None
        check_match_layers(self.match_layers, loaded.n_layers)
        return self.match_layers / loaded.n_layers

    def layers(self, loaded: LoadedModel, method: str) -> int:
        """Whole layers for a method that removes layers: K, or round(F · L) (refused when that is 0 or L)."""
        n = loaded.n_layers
        if self.nm is not None:
            raise UserError(f"--nm applies to --method nm; --method {method} removes whole layers (--match-layers K)")
        if self.match_layers is not None:
            return check_match_layers(self.match_layers, n)
        assert self.sparsity is not None
        k = round(self.sparsity * n)
        if k < 1:
            raise UserError(
                f"--sparsity {self.sparsity:g} is less than half a layer of this {n}-layer model (one layer is {1 / n:.3g}); "
                f"--method {method} removes whole layers"
            )
        if k >= n:
            raise UserError(f"--sparsity {self.sparsity:g} would remove all {n} layers; --method {method} must keep one")
        return k


def check_sparsity(f: float) -> float:
    if isinstance(f, bool) or not isinstance(f, (int, float)) or not math.isfinite(f) or not 0 < f < 1:
        raise UserError(
            f"--sparsity {f}: give the fraction of the decoder's linear weights to remove, strictly between 0 and 1 (e.g. 0.2)"
        )
    return float(f)


def check_match_layers(k: int, n_layers: int | None = None) -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise UserError(f"--match-layers {k!r}: expected a whole number of layers")
    if k < 1:
        raise UserError(f"--match-layers {k}: must be at least 1 (the parameters of K decoder layers)")
    if n_layers is not None and k >= n_layers:
        raise UserError(f"--match-layers {k}: the model has {n_layers} layers, so at most {n_layers - 1}")
    return k


_NM = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


def parse_nm(text: str) -> tuple[int, int]:
    """'2:4' -> (2, 4): keep N of every M consecutive weights (0 < N < M)."""
    m = _NM.match(text or "")
    if not m:
        raise UserError(f"--nm '{text}': expected N:M, e.g. 2:4 (keep 2 of every 4 consecutive weights of a row)")
    n, mm = int(m.group(1)), int(m.group(2))
    if not 0 < n < mm:
        raise UserError(f"--nm {text}: N must be at least 1 and smaller than M (e.g. 2:4)")
    if mm > 64:
        raise UserError(f"--nm {text}: M at most 64")
    return n, mm


def measure_tokens_per_s(loaded: LoadedModel, n_tokens: int = 16, repeats: int = 2, prompt_len: int = 16) -> dict[str, Any]:
    """Greedy decoding speed on this machine: batch 1, a fixed prompt of `prompt_len` token ids, exactly
    `n_tokens` new tokens with the KV cache; the median of `repeats` timed runs after one warm-up."""
    model = loaded.model
    vocab = int(getattr(model.config, "vocab_size", 2))
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(2, max(3, vocab), (1, prompt_len), generator=gen).to(loaded.device)
    mask = torch.ones_like(ids)
    times = []
    was = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for r in range(repeats + 1):
                t0 = time.perf_counter()
                model.generate(
                    input_ids=ids,
                    attention_mask=mask,
                    max_new_tokens=n_tokens,
                    min_new_tokens=n_tokens,
                    do_sample=False,
                    pad_token_id=int(getattr(model.config, "pad_token_id", None) or 0),
                )
                if r:
                    times.append(time.perf_counter() - t0)
    finally:
        model.train(was)
    secs = statistics.median(times)
    try:
        load = round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):  # not every platform reports it
        load = None
    return {
        "load_average_1min": load,
        "tokens_per_s": n_tokens / secs if secs > 0 else None,
        "device": str(loaded.device),
        "threads": torch.get_num_threads(),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "n_tokens": n_tokens,
        "repeats": repeats,
    }
