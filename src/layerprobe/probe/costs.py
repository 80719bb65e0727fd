"""Memory and time of layerprobe's work as formulas in a model's shape (docs/performance.md#the-memory-and-time-model).

Shape parameters: L decoder layers, H hidden size, I intermediate size, heads / kv_heads of head_dim
d_h, V vocabulary, an untied or tied unembedding; b bytes per value of the model's dtype (2 for
bfloat16, 4 for float32); B sequences in a batch, T positions. Every function returns bytes or
floating-point operations (one multiply-add = 2 FLOPs). The formulas count the tensors layerprobe's
code holds (probe.prefill, probe.hooks, probe.lens) and the model's own; PyTorch's allocator and
kernels add a working set of their own on top, which the measurements show.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layerprobe.data.probes import columns
from layerprobe.probe.lens import MAX_LENS_ELEMENTS

STORED_BYTES_PER_TOKEN_LAYER = 5 * 2 + 4
"""In a trace's .npz before compression: block influence, norm, JSD, entropy, top-1 as float16, rank as int32."""
STORED_BYTES_PER_TOKEN = 4 + 4
"""The token id and its lens position (int32 each)."""


@dataclass(frozen=True)
class ModelShape:
    """What the costs depend on."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    tied: bool
    qkv_bias: bool = False
    qk_norm: bool = False

    @property
    def layer_params(self) -> int:
        """Weights of one decoder layer: attention, SwiGLU MLP (gate, up, down), norms."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attn = self.hidden * q + 2 * self.hidden * kv + q * self.hidden
        if self.qkv_bias:
            attn += q + 2 * kv
        norms = 2 * self.hidden + (2 * self.head_dim if self.qk_norm else 0)
        return attn + 3 * self.hidden * self.intermediate + norms

    @property
    def params(self) -> int:
        """All weights: embedding, layers, final norm, unembedding (shared with the embedding when tied)."""
        embed = self.vocab * self.hidden
        return embed * (1 if self.tied else 2) + self.layers * self.layer_params + self.hidden

    def with_layers(self, layers: int) -> ModelShape:
        """The same shape at another depth."""
        from dataclasses import replace

        return replace(self, name=f"{self.name} ({layers} layers)", layers=layers)


def shape_of(config: Any, name: str | None = None) -> ModelShape:
    """The shape of a Hugging Face causal-LM config."""
    heads = int(config.num_attention_heads)
    head_dim = getattr(config, "head_dim", None) or int(config.hidden_size) // heads
    return ModelShape(
        name=name or str(getattr(config, "name_or_path", "") or config.model_type),
        layers=int(config.num_hidden_layers),
        hidden=int(config.hidden_size),
        intermediate=int(config.intermediate_size),
        heads=heads,
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(head_dim),
        vocab=int(config.vocab_size),
        tied=bool(getattr(config, "tie_word_embeddings", False)),
        qkv_bias=bool(getattr(config, "attention_bias", False)) or config.model_type == "qwen2",
        qk_norm=config.model_type == "qwen3",
    )


# The study's two models and the ones layerprobe is measured on (their published configs).
SHAPES: dict[str, ModelShape] = {
    s.name: s
    for s in [
        ModelShape("s1.1-7b", 28, 3584, 18944, 28, 4, 128, 152064, tied=False, qkv_bias=True),  # Qwen2.5-7B
        ModelShape("qwen3-8b", 36, 4096, 12288, 32, 8, 128, 151936, tied=False, qk_norm=True),
        ModelShape("smollm2-135m", 30, 576, 1536, 9, 3, 64, 49152, tied=True),
        ModelShape("toy", 12, 128, 512, 4, 4, 32, 96, tied=True, qk_norm=True),
        # s1.1-7B's layout (Qwen2, grouped KV heads, untied unembedding) at a size for smoke tests
        ModelShape("tiny", 2, 64, 128, 4, 2, 16, 512, tied=False, qkv_bias=True),
    ]
}


# -- memory (bytes) --------------------------------------------------------------------------------


def weights_bytes(s: ModelShape, b: int) -> int:
    return s.params * b


def kv_bytes(s: ModelShape, positions: int, batch: int, b: int) -> int:
    """The KV cache: keys and values of every layer, kv_heads × head_dim per position: 2·L·kv·d_h·T·B·b."""
    return 2 * s.layers * s.kv_heads * s.head_dim * positions * batch * b


def lens_rows(s: ModelShape, rows: int) -> int:
    """Rows (positions) the lens handles at once: its (rows, L, V) float32 logits stay under MAX_LENS_ELEMENTS."""
    return max(1, min(rows, MAX_LENS_ELEMENTS // max(1, s.layers * s.vocab)))


def lens_bytes(s: ModelShape, rows: int, b: int) -> int:
    """The lens's working set for `rows` positions, g = lens_rows of them at a time: the unembedding's
    output g·L·V in the model's dtype and its float32 copy (one tensor when the model is float32), and
    the final layer's distribution twice in float32 (2·g·V·4)."""
    g = lens_rows(s, rows)
    return g * s.layers * s.vocab * (4 if b == 4 else b + 4) + 2 * g * s.vocab * 4


def live_probe_bytes(s: ModelShape, batch: int, b: int) -> int:
    """Per decode step of the live probe (probe.hooks): every layer's last-position input and output
    kept, B·(L+1)·H·b, plus the lens of that step's B rows."""
    return batch * (s.layers + 1) * s.hidden * b + lens_bytes(s, batch, b)


def probe_rows_bytes(s: ModelShape, tokens: int) -> int:
    """The statistics a probe keeps until its trace is finished: C·L float32 per token (C = the
    registered probe columns, 6 built in)."""
    return tokens * len(columns()) * s.layers * 4


def forward_activation_bytes(s: ModelShape, tokens: int, b: int) -> int:
    """The working set of one decoder layer during a forward pass over `tokens` positions (all rows of
    the batch together), which the next layer reuses: the residual stream, its normed copy, the
    attention's queries, keys, values and output (about 4 hidden-sized tensors), and the MLP's gate, up
    and their product (3 intermediate-sized ones): tokens·(4·H + 3·I)·b. An estimate: kernels'
    workspaces and the attention's scores (none with a fused kernel) come on top."""
    return tokens * (4 * s.hidden + 3 * s.intermediate) * b


def logits_bytes(s: ModelShape, positions: int, batch: int, b: int) -> int:
    """The model's own next-token logits when every position's are computed: B·T·V·b."""
    return batch * positions * s.vocab * b


def prefill_bytes(s: ModelShape, positions: int, batch: int, b: int, logits: bool = False) -> int:
    """Activation memory of one prefill forward pass with probes (probe.prefill), besides weights and KV
    cache. Held throughout: the hidden states of every layer at every position, captured and stacked
    (2·B·T·(L+1)·H·b) and the probe rows. On top, whichever is larger of the forward pass's own working
    set (one layer's, forward_activation_bytes, plus the logits of every position when the model
    computes them; probe.prefill asks for the last position's only) and the reduction that follows it,
    one sequence at a time: its float32 copy unless the model is float32 (T·(L+1)·H·4), the cosine's
    temporaries (2·T·L·H·4) and the lens (lens_bytes)."""
    capture = 2 * batch * positions * (s.layers + 1) * s.hidden * b
    rows = batch * probe_rows_bytes(s, positions)
    forward = forward_activation_bytes(s, batch * positions, b) + (logits_bytes(s, positions, batch, b) if logits else 0)
    copy = 0 if b == 4 else positions * (s.layers + 1) * s.hidden * 4
    reduce = copy + 2 * positions * s.layers * s.hidden * 4 + lens_bytes(s, positions, b)
    return capture + rows + max(forward, reduce)


def prefill_peak_bytes(s: ModelShape, trace: int, chunk: int, batch: int, b: int) -> int:
    """Peak of probing traces of `trace` positions by prefill (probe.prefill.prefill_many): weights, the
    KV cache of one whole trace when it is longer than `chunk` (chunks carry the cache), one chunk's
    activations (B traces at a time when they fit one chunk, else one)."""
    if trace > chunk:
        return weights_bytes(s, b) + kv_bytes(s, trace, 1, b) + prefill_bytes(s, chunk, 1, b) + probe_rows_bytes(s, trace)
    return weights_bytes(s, b) + prefill_bytes(s, trace, batch, b)


def generation_bytes(s: ModelShape, positions: int, batch: int, b: int, probes: bool = True) -> int:
    """Generating B traces of up to `positions` positions (the engine: weights, KV cache, the prompt's
    logits are small), with the live probe's buffers and per-trace rows."""
    extra = live_probe_bytes(s, batch, b) + batch * probe_rows_bytes(s, positions) if probes else 0
    return weights_bytes(s, b) + kv_bytes(s, positions, batch, b) + batch * s.vocab * 4 + extra


def max_batch(s: ModelShape, positions: int, memory: int, b: int, probes: bool = True, reserve: float = 0.1) -> int:
    """The largest batch whose generation (generation_bytes) fits `memory` bytes with a fraction
    `reserve` kept free for the allocator and kernels' workspaces; 0 when not even one fits."""
    budget = memory * (1 - reserve)
    lo, hi = 0, 1
    while generation_bytes(s, positions, hi, b, probes) <= budget:
        lo, hi = hi, hi * 2
        if hi > 1 << 16:
            return lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if generation_bytes(s, positions, mid, b, probes) <= budget else (lo, mid)
    return lo


def stored_bytes(s: ModelShape, tokens: int) -> int:
    """A probed trace's arrays on disk before compression."""
    return tokens * (s.layers * STORED_BYTES_PER_TOKEN_LAYER + STORED_BYTES_PER_TOKEN)


# -- work (FLOPs) ----------------------------------------------------------------------------------


def forward_flops(s: ModelShape, tokens: int, context: float, head: bool = True) -> float:
    """A forward pass over `tokens` positions that each attend to `context` positions on average: the
    layers' matmuls, attention scores and values (4·L·heads·d_h per position and attended position),
    the unembedding when `head`."""
    dense = 2 * s.layers * s.layer_params * tokens
    attn = 4 * s.layers * s.heads * s.head_dim * context * tokens
    return dense + attn + (2 * s.hidden * s.vocab * tokens if head else 0)


def lens_flops(s: ModelShape, tokens: int) -> float:
    """The logit lens at every layer: 2·L·H·V per token (the matmul; the statistics are a few passes
    over the L·V logits, counted in time, not here)."""
    return 2 * s.layers * s.hidden * s.vocab * tokens


def prefill_flops(s: ModelShape, tokens: int, lens: bool = True) -> float:
    """Probing a trace of `tokens` positions by prefill: a causal forward (each position attends to
    half the trace on average) and the lens at every position."""
    return forward_flops(s, tokens, tokens / 2, head=False) + (lens_flops(s, tokens) if lens else 0)


# -- a GPU ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """What the time model assumes of an accelerator: peak dense bfloat16 FLOP/s, memory bandwidth,
    memory, and the fractions of the peaks that large matmuls and decode steps reach, plus a fixed
    cost per decode step of a Hugging Face model (Python and kernel launches, per layer)."""

    name: str
    flops: float
    bandwidth: float
    memory: int
    mfu: float = 0.5
    mbu: float = 0.7
    step_overhead_per_layer: float = 0.5e-3


H100 = Device("H100 SXM 80 GB", flops=989e12, bandwidth=3.35e12, memory=80 * 10**9)


def decode_step_seconds(s: ModelShape, batch: int, context: float, dev: Device, b: int = 2, lens: bool = False) -> float:
    """One decode step of B rows at `context` positions: reading the weights and the KV cache at the
    achieved bandwidth or the step's FLOPs at the achieved rate, whichever is longer, plus the per-step
    overhead; with `lens`, the live probe's lens matmul for B rows and its statistics (a few float32
    passes over B·L·V logits, memory-bound)."""
    read = weights_bytes(s, b) + kv_bytes(s, int(context), batch, b)
    t = max(read / (dev.bandwidth * dev.mbu), forward_flops(s, batch, context) / (dev.flops * dev.mfu))
    if lens:
        t += lens_flops(s, batch) / (dev.flops * dev.mfu) + 10 * batch * s.layers * s.vocab * 4 / (dev.bandwidth * dev.mbu)
    return t + s.layers * dev.step_overhead_per_layer


def prefill_seconds(s: ModelShape, tokens: int, dev: Device, lens: bool = True) -> float:
    """Probing a trace by prefill on `dev` (compute-bound), the lens's statistics as memory passes."""
    t = prefill_flops(s, tokens, lens) / (dev.flops * dev.mfu)
    return t + (10 * tokens * s.layers * s.vocab * 4 / (dev.bandwidth * dev.mbu) if lens else 0)
