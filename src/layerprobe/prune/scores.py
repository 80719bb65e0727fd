"""Layer-importance scores on calibration text (docs/definitions.md#pruning-scores-and-methods), computed with forward hooks.

Notation: x_i is the hidden state *entering* decoder layer i of the model as it is now, and x_{i+1} is
that layer's output; x_L (the output of the last layer) is taken *before* the final norm. Hooks on the
decoder layers capture exactly these tensors (transformers' `output_hidden_states[-1]` would be the
post-norm state instead), and the forward pass is stopped after the last layer, so the final norm
and the unembedding never run.

- Block influence (ShortGPT): BI_i = 1 − mean_t cos(x_{i,t}, x_{i+1,t}), the mean over every real
  (non-padding) token of every document, pooled (token-weighted).
- Angular distance (Gromov et al. 2024): d(ℓ, n) = arccos(cos(x_{ℓ,T}, x_{ℓ+n,T})) / π at the last real
  token T of each document, averaged over documents, for ℓ = 0 … L−n.

Hidden states are cast to float32 before any cosine; per-batch sums are accumulated in float64.
Accumulation streams: only running sums per layer are kept across batches, never the hidden states of
earlier documents, so memory does not grow with the number of documents. Documents are right-padded
within a batch and every average is taken under the attention mask, so batched scores equal
batch-size-1 scores (up to floating-point rounding).

Indexing: every per-layer list returned here is indexed by the model's *current* layer position i;
the original index of position i is `loaded.layer_map[i]` (they coincide for an unpruned model).
`block_influence_by_original` and `LayerScores.by_original` give the same numbers keyed by original
index.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from layerprobe.errors import UserError
from layerprobe.models.hooks import eval_mode, first_tensor, layer_hooks
from layerprobe.models.loaded import LoadedModel

Document = str | Sequence[int]
ProgressFn = Callable[[int, int], None]


@dataclass
class LayerScores:
    """Scores of every current layer of one model on one calibration set.

    `block_influence[i]` and `angular[n][ℓ]` are indexed by current layer position; `layer_map[i]` is
    the original index of position i.
    """

    layer_map: list[int]
    block_influence: list[float]
    angular: dict[int, list[float]] = field(default_factory=dict)  # n -> [d(ℓ, n) for ℓ = 0 … L−n]
    n_docs: int = 0
    n_tokens: int = 0
    seq_len: int = 256

    def by_original(self) -> dict[int, float]:
        """Block influence keyed by original layer index."""
        return {orig: bi for orig, bi in zip(self.layer_map, self.block_influence)}

    def angular_by_original(self, n: int = 1) -> dict[int, float]:
        """d(ℓ, n) keyed by the original index of the block's first layer ℓ."""
        return {self.layer_map[pos]: d for pos, d in enumerate(self.angular[n])}

    def bi_ranking(self) -> list[int]:
        """Original layer indices ordered by block influence, lowest (least important) first."""
        order = sorted(range(len(self.block_influence)), key=lambda i: (self.block_influence[i], i))
        return [self.layer_map[i] for i in order]


class StopForward(Exception):
    """Raised by a hook once everything needed has been captured; ends the forward pass early."""


def _documents(texts: Any) -> tuple[list[Document], bool]:
    """The documents of `texts` (a list of strings / token-id lists, or a Calibration) and whether the
    tokenizer should add its special tokens to string documents."""
    docs = getattr(texts, "documents", None)
    if docs is not None:
        return list(docs), bool(getattr(texts, "add_special_tokens", True))
    if isinstance(texts, str):
        raise TypeError("texts must be a list of documents, not one string")
    return list(texts), True


def encode_documents(tokenizer: Any, texts: Any, seq_len: int, add_special_tokens: bool | None = None) -> list[list[int]]:
    """Token ids of each document, truncated to `seq_len` tokens; empty documents are skipped.

    A document is a string (tokenized with `tokenizer`) or an already tokenized list of ids.
    UserError if no document has a token.
    """
    if seq_len < 1:
        raise UserError(f"--seq-len {seq_len}: must be at least 1")
    docs, add_special = _documents(texts)
    if add_special_tokens is not None:
        add_special = add_special_tokens
    out: list[list[int]] = []
    for doc in docs:
        if isinstance(doc, str):
            if not doc.strip():
                continue
            if tokenizer is None:
                raise UserError("the model has no tokenizer, so text documents cannot be scored")
            ids = tokenizer(doc, add_special_tokens=add_special, truncation=True, max_length=seq_len)["input_ids"]
        else:
            ids = [int(t) for t in doc]
        ids = list(ids[:seq_len])
        if ids:
            out.append(ids)
    if not out:
        raise UserError("the calibration documents are empty (no tokens to score)")
    return out


def pad_token_id(loaded: LoadedModel) -> int:
    tok = loaded.tokenizer
    for cand in (
        getattr(tok, "pad_token_id", None),
        getattr(loaded.model.config, "pad_token_id", None),
        getattr(tok, "eos_token_id", None),
    ):
        if isinstance(cand, int):
            return cand
    return 0


def iter_batches(ids: list[list[int]], batch_size: int, pad_id: int, device: torch.device):
    """Right-padded batches (input_ids, attention_mask, lengths, document indices), longest first.

    Right padding keeps every real token at the same position (and attending to the same keys) as in a
    batch of one, so padding changes nothing but the work done.
    """
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")
    order = sorted(range(len(ids)), key=lambda i: (-len(ids[i]), i))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        width = len(ids[chunk[0]])
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, k in enumerate(chunk):
            n = len(ids[k])
            input_ids[row, :n] = torch.tensor(ids[k], dtype=torch.long)
            mask[row, :n] = 1
        lengths = mask.sum(dim=1)
        yield input_ids.to(device), mask.to(device), lengths.to(device), chunk


def run_with_layer_hooks(
    loaded: LoadedModel,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    on_input: Callable[[torch.Tensor], None],
    on_output: Callable[[int, torch.Tensor], None],
) -> None:
    """Run the model on one batch, calling `on_input(x_0)` with the hidden state entering layer 0 and
    `on_output(i, x_{i+1})` with each decoder layer's output (the last one before the final norm).

    The pass stops after the last decoder layer. Hooks are removed in all cases.
    """
    n = len(loaded.layers)

    def out_hook(i: int, _x_in: torch.Tensor, x_out: torch.Tensor) -> None:
        on_output(i, x_out)
        if i == n - 1:
            raise StopForward

    with layer_hooks(loaded, out_hook, on_input=on_input):
        try:
            loaded.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except StopForward:
            pass
        else:  # pragma: no cover - the last layer always runs
            raise RuntimeError("the forward pass did not reach the last decoder layer")


def layer_scores(
    loaded: LoadedModel,
    texts: Any,
    n_max: int = 1,
    seq_len: int = 256,
    batch_size: int = 8,
    *,
    add_special_tokens: bool | None = None,
    progress: ProgressFn | None = None,
) -> LayerScores:
    """Block influence of every current layer and angular distances d(ℓ, n), n = 1 … n_max, in one pass.

    `texts`: a list of documents (strings, or token-id lists used as given) or a Calibration. Each
    document is one sequence truncated at `seq_len` tokens.
    """
    n_layers = loaded.n_layers
    if not 1 <= n_max <= n_layers:
        raise UserError(f"--n-max {n_max}: must be between 1 and the number of layers ({n_layers})")
    ids = encode_documents(loaded.tokenizer, texts, seq_len, add_special_tokens)
    device = loaded.device
    bi_sum = torch.zeros(n_layers, dtype=torch.float64)
    ang_sum = {n: torch.zeros(n_layers + 1 - n, dtype=torch.float64) for n in range(1, n_max + 1)}
    n_tokens = 0
    n_docs = 0
    pad = pad_token_id(loaded)

    with eval_mode(loaded.model), torch.inference_mode():
        for input_ids, mask, lengths, _chunk in iter_batches(ids, batch_size, pad, device):
            maskf = mask.to(torch.float32)
            rows = torch.arange(input_ids.shape[0], device=device)
            last_pos = lengths - 1
            state: dict[str, Any] = {"prev": None, "last": [], "bi": [None] * n_layers}

            # x.float() is x itself for float32 models: this relies on decoder layers not writing into
            # their input in place (true of the supported families, whose residual adds are out of place).
            def on_input(
                x: torch.Tensor, state: dict[str, Any] = state, rows: torch.Tensor = rows, last_pos: torch.Tensor = last_pos
            ) -> None:
                x32 = x.float()
                state["prev"] = x32
                state["last"].append(x32[rows, last_pos])

            def on_output(
                i: int,
                y: torch.Tensor,
                state: dict[str, Any] = state,
                rows: torch.Tensor = rows,
                last_pos: torch.Tensor = last_pos,
                maskf: torch.Tensor = maskf,
            ) -> None:
                y32 = y.float()
                cos = F.cosine_similarity(state["prev"], y32, dim=-1)  # [B, S]
                state["bi"][i] = (cos * maskf).sum()
                state["last"].append(y32[rows, last_pos])
                state["prev"] = y32

            run_with_layer_hooks(loaded, input_ids, mask, on_input, on_output)
            state["prev"] = None
            batch_bi = torch.stack(state["bi"]).double().cpu()
            last = torch.stack(state["last"])  # [L+1, B, H]
            unit = F.normalize(last, dim=-1)
            for n in ang_sum:
                cos_n = (unit[:-n] * unit[n:]).sum(dim=-1).clamp(-1.0, 1.0)  # [L+1-n, B]
                ang_sum[n] += (torch.arccos(cos_n) / math.pi).sum(dim=1).double().cpu()
            if not torch.isfinite(batch_bi).all() or not all(torch.isfinite(a).all() for a in ang_sum.values()):
                bad = [loaded.layer_map[i] for i in range(n_layers) if not math.isfinite(float(batch_bi[i]))]
                raise UserError(
                    f"non-finite hidden states while scoring (layers {bad or '?'}); "
                    "the model overflows in this dtype: try --dtype float32"
                )
            bi_sum += batch_bi
            n_tokens += int(lengths.sum())
            n_docs += len(_chunk)
            if progress is not None:
                progress(n_docs, len(ids))

    bi = [1.0 - float(s) / n_tokens for s in bi_sum]
    angular = {n: [float(s) / n_docs for s in a] for n, a in ang_sum.items()}
    return LayerScores(
        layer_map=list(loaded.layer_map),
        block_influence=bi,
        angular=angular,
        n_docs=n_docs,
        n_tokens=n_tokens,
        seq_len=seq_len,
    )


def block_influence(loaded: LoadedModel, texts: Any, seq_len: int = 256, batch_size: int = 8) -> list[float]:
    """ShortGPT block influence BI_i = 1 − mean_t cos(x_{i,t}, x_{i+1,t}), one value per current layer.

    Entry i belongs to original layer `loaded.layer_map[i]` (the same index for an unpruned model); see
    `block_influence_by_original` for a dict keyed by original index.
    """
    return layer_scores(loaded, texts, n_max=1, seq_len=seq_len, batch_size=batch_size).block_influence


def block_influence_by_original(loaded: LoadedModel, texts: Any, seq_len: int = 256, batch_size: int = 8) -> dict[int, float]:
    """Block influence keyed by original layer index (only the layers present in `loaded`)."""
    return layer_scores(loaded, texts, n_max=1, seq_len=seq_len, batch_size=batch_size).by_original()


def angular_distances(
    loaded: LoadedModel, texts: Any, n_max: int, seq_len: int = 256, batch_size: int = 8
) -> dict[int, list[float]]:
    """{n: [d(ℓ, n) for ℓ = 0 … L−n]} for n = 1 … n_max, ℓ a current layer position.

    d(ℓ, n) = arccos(cos(x_{ℓ,T}, x_{ℓ+n,T})) / π at each document's last real token T, averaged over
    documents; the block ℓ … ℓ+n−1 is what removing n layers from ℓ deletes.
    """
    return layer_scores(loaded, texts, n_max=n_max, seq_len=seq_len, batch_size=batch_size).angular


def final_hidden_states(loaded: LoadedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The model's last hidden state (the final norm's output, i.e. transformers' `hidden_states[-1]`),
    without computing logits. Call under inference_mode."""
    captured: list[torch.Tensor] = []

    def hook(_module, _args, output):
        captured.append(first_tensor(output))
        raise StopForward

    handle = loaded.final_norm.register_forward_hook(hook)
    try:
        try:
            loaded.model(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        except StopForward:
            pass
    finally:
        handle.remove()
    if not captured:
        raise RuntimeError("the final norm did not run")
    return captured[0]


def perplexity(
    loaded: LoadedModel,
    texts: Any,
    seq_len: int = 256,
    batch_size: int = 8,
    *,
    add_special_tokens: bool | None = None,
    ids: list[list[int]] | None = None,
) -> tuple[float, float, int]:
    """Calibration perplexity: exp of the mean next-token negative log-likelihood over every predicted
    real token (pooled over documents). Returns (perplexity, mean NLL in nats, number of predicted
    tokens). Log-softmax is taken in float32 one document at a time."""
    if ids is None:
        ids = encode_documents(loaded.tokenizer, texts, seq_len, add_special_tokens)
    total = 0.0
    count = 0
    with eval_mode(loaded.model), torch.inference_mode():
        for input_ids, mask, lengths, _chunk in iter_batches(ids, batch_size, pad_token_id(loaded), loaded.device):
            logits = loaded.model(input_ids=input_ids, attention_mask=mask, use_cache=False).logits
            for row in range(input_ids.shape[0]):
                n = int(lengths[row])
                if n < 2:
                    continue
                lp = torch.log_softmax(logits[row, : n - 1].float(), dim=-1)
                nll = -lp.gather(1, input_ids[row, 1:n].unsqueeze(1)).sum()
                total += float(nll)
                count += n - 1
            del logits
    if count == 0:
        raise UserError("the calibration documents are too short for perplexity (need at least 2 tokens)")
    mean = total / count
    return math.exp(min(mean, 700.0)), mean, count
