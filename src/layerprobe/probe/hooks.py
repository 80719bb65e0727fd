"""Streaming per-layer capture during generation: the `LayerProbe` observer and `capture()`.

`LayerProbe` registers forward hooks on the decoder layers of the unmodified HF model and plugs into
the scaling engine as a GenerationObserver. For every forward pass the engine announces
(`on_forward`), the hooks keep only the LAST position of each layer's input and output (B × H
per layer, never hidden × tokens; after left padding the last position is always a real token, so
pads never enter a statistic). When the engine reports the tokens it feeds next (`on_tokens`), the
step is reduced to a few scalars per row and layer and appended to that row's list:

- block influence 1 − cos(x_in, x_out) and ‖x_out‖ in float32;
- with `lens=True`, the logit lens of every layer (probe.lens: one stacked matmul), JSD to the last
  layer, entropy, top-1 agreement and the rank of the fed token;
- the columns of any other registered probe (layerprobe.data.probes; the array: probe.columns).

Step n of a row is the forward whose last position produced GenResult.all_ids[n] (prefill is step 0).
Every statistic is computed per row, so it does not depend on what else is in the batch (up to
floating-point differences between batch shapes of the underlying matmuls).

Forward passes not announced by `on_forward` (anything run outside the engine while the probe is
attached) are ignored by the hooks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from layerprobe.data.probes import probes
from layerprobe.errors import UserError
from layerprobe.models.hooks import layer_hooks
from layerprobe.models.loaded import LoadedModel
from layerprobe.probe.columns import StepInputs, n_columns, probe_rows, trace_layers
from layerprobe.probe.layer_files import TraceLayers
from layerprobe.probe.lens import model_softcap

# (row, step) slots per storage slab. Per-step results are copied into a few large slabs instead of
# one small array per step: hundreds of small long-lived arrays interleaved with the KV cache's
# per-step reallocations fragmented the heap and made `torch.cat` in the cache up to 5x slower on the
# toy (docs/performance.md).
_SLAB = 4096


class LayerProbe:
    """Per-token, per-layer statistics of every trace generated while attached.

    Use as a context manager (hooks are removed on exit, also on errors) and pass it to
    `TraceGenerator.generate(..., observers=[probe])`; `pop(key)` returns a finished trace's
    `TraceLayers` (finished traces are kept until popped).

    lens: compute the logit-lens statistics (else they are NaN, rank −1, label "none").
    lens_every: run the lens only on steps n with n % lens_every == 0 (per trace; others NaN / −1;
        the steps where it ran are in `TraceLayers.lens_positions`).
    lens_topk: restrict the lens to the final layer's top-K vocabulary (label "topk:K").
    """

    def __init__(self, loaded: LoadedModel, *, lens: bool = True, lens_every: int = 1, lens_topk: int | None = None) -> None:
        if lens_every < 1:
            raise UserError("lens_every must be >= 1")
        if lens_topk is not None and lens_topk < 1:
            raise UserError("lens_topk must be >= 1")
        self.loaded = loaded
        self.lens = bool(lens)
        self.lens_every = int(lens_every)
        self.lens_topk = lens_topk
        self.label = "none" if not self.lens else ("full" if lens_topk is None else f"topk:{int(lens_topk)}")
        self.layers = np.asarray(loaded.layer_map, dtype=np.int16)
        self._n = len(loaded.layers)
        self._softcap = model_softcap(loaded.model)
        self._probes = probes()  # the registered probes when attached: one column layout per probe
        self._cols = n_columns(self._probes)
        self._hooks: Any = None  # the layer_hooks context while attached
        self._armed = False
        self._prefill = False
        self._keys: list[Any] = []
        self._x0: torch.Tensor | None = None
        self._outs: list[torch.Tensor | None] = [None] * self._n
        self._rows: dict[Any, list[int]] = {}  # key -> per-step slot (slab id * _SLAB + index)
        self._slabs: dict[int, np.ndarray] = {}  # slab id -> (_SLAB, C, L) float32
        self._live: dict[int, int] = {}  # slab id -> slots not yet built into a finished trace
        self._slab = -1  # id of the slab being filled
        self._fill = _SLAB  # slots used in it
        self._tokens: dict[Any, list[int]] = {}
        self._done: dict[Any, TraceLayers] = {}

    # -- hooks -----------------------------------------------------------------------------------

    def __enter__(self) -> LayerProbe:
        self.attach()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def attach(self) -> None:
        if self._hooks is not None:
            return
        self._hooks = layer_hooks(self.loaded, self._on_output, on_input=self._on_input)
        self._hooks.__enter__()

    def close(self) -> None:
        """Remove the hooks (idempotent). Finished traces stay available to `pop`."""
        if self._hooks is not None:
            hooks, self._hooks = self._hooks, None
            hooks.__exit__(None, None, None)
        self._armed = False
        self._x0 = None
        self._outs = [None] * self._n

    def _last(self, t: torch.Tensor) -> torch.Tensor:
        t = t[:, -1:, :]
        # prefill: copy the last position so the full (B, T, H) tensor is not kept alive;
        # decode: T == 1, the tensor is already B × H
        return t.clone() if self._prefill else t

    def _on_input(self, x: torch.Tensor) -> None:
        if self._armed:
            self._x0 = self._last(x)

    def _on_output(self, i: int, _x_in: torch.Tensor, x_out: torch.Tensor) -> None:
        if self._armed:
            self._outs[i] = self._last(x_out)

    # -- observer --------------------------------------------------------------------------------

    def on_forward(self, keys: Sequence[Any], attention_mask: torch.Tensor, prefill: bool) -> None:
        if self._hooks is None:
            raise RuntimeError("LayerProbe is not attached: use it as a context manager")
        self._keys = list(keys)
        self._prefill = bool(prefill)
        self._armed = True
        for k in self._keys:
            if k not in self._rows:
                self._rows[k] = []
                self._tokens[k] = []

    def on_tokens(self, keys: Sequence[Any], tokens: Sequence[int], phases: Sequence[int]) -> None:
        self._armed = False
        x0, outs = self._x0, [o for o in self._outs if o is not None]
        if x0 is None or len(outs) != len(self._outs):
            raise RuntimeError("the probe's hooks did not see the forward pass (is the model the loaded one?)")
        with torch.inference_mode():
            stats = self._step_stats(x0, outs, list(tokens))  # (B, C, L)
        self._x0, self._outs = None, [None] * self._n
        B = stats.shape[0]
        if self._fill + B > _SLAB:
            if self._live.get(self._slab) == 0:  # every trace in the full slab has already finished
                del self._slabs[self._slab], self._live[self._slab]
            self._slab += 1
            self._slabs[self._slab] = np.empty((_SLAB, self._cols, self._n), dtype=np.float32)
            self._live[self._slab] = 0
            self._fill = 0
        slab, start = self._slab, self._fill
        self._slabs[slab][start : start + B] = stats
        self._fill += B
        self._live[slab] += B
        for b, key in enumerate(keys):
            self._rows[key].append(slab * _SLAB + start + b)
            self._tokens[key].append(int(tokens[b]))

    def on_fork(self, parent: Any, child: Any) -> None:
        """A trace forked from `parent` (scaling engine, shared budget prefixes): the child's steps so
        far are the parent's (shared slab slots, counted once per trace that refers to them)."""
        self._rows[child] = list(self._rows[parent])
        self._tokens[child] = list(self._tokens[parent])
        for slot in self._rows[child]:
            self._live[slot // _SLAB] += 1

    def _step_stats(self, x0: torch.Tensor, outs: list[torch.Tensor], tokens: list[int]) -> np.ndarray:
        """(B, C, L) float32 for the forward pass just captured (embedding output, each layer's output)."""
        raw = torch.cat([x0, *outs], dim=1)  # (B, L+1, H) model dtype
        need = None
        if self.lens:
            steps = [len(self._rows[k]) for k in self._keys]
            need = [b for b, s in enumerate(steps) if s % self.lens_every == 0]
        tok = torch.tensor(tokens, dtype=torch.long, device=raw.device)
        inp = StepInputs(raw, tok, self.loaded.final_norm, self.loaded.unembed, self._softcap, self.lens_topk)
        return probe_rows(inp, need, self._probes).cpu().numpy()

    def on_finish(self, result: Any) -> None:
        key = result.key
        self._done[key] = self._build(key)

    def _build(self, key: Any) -> TraceLayers:
        slots = self._rows.pop(key, [])
        toks = self._tokens.pop(key, [])
        L = self._n
        if slots:
            arr = np.stack([self._slabs[s // _SLAB][s % _SLAB] for s in slots])  # (T, C, L)
        else:
            arr = np.zeros((0, self._cols, L), dtype=np.float32)
        for s in slots:
            self._live[s // _SLAB] -= 1
        for sid in {s // _SLAB for s in slots}:
            if self._live[sid] == 0 and sid != self._slab:
                del self._slabs[sid], self._live[sid]
        return trace_layers(
            arr,
            key=key,
            layers=self.layers.copy(),
            tokens=toks,
            lens=self.label,
            lens_every=self.lens_every,
            n_layers_original=self.loaded.n_layers_original,
            specs=self._probes,
        )

    def pop(self, key: Any) -> TraceLayers:
        """The TraceLayers of the finished trace `key` (removed from the probe). KeyError if that trace
        has not finished (or was already popped)."""
        if key not in self._done:
            state = "still running" if key in self._rows else "unknown or already popped"
            raise KeyError(f"no finished trace {key!r} ({state})")
        return self._done.pop(key)

    def finished(self) -> list[Any]:
        """Keys of finished traces not yet popped."""
        return list(self._done)


def capture(
    loaded: LoadedModel,
    prompts: Sequence[str],
    fmt: Any = None,
    budget: int = 512,
    sampling: Any = None,
    *,
    wait: int = 0,
    answer_max: int = 64,
    seed: int = 0,
    batch_size: int = 16,
    lens: bool = True,
    lens_every: int = 1,
    lens_topk: int | None = None,
    chat: bool = True,
    on_result: Callable[[Any, TraceLayers], None] | None = None,
) -> list[tuple[Any, TraceLayers]]:
    """Generate one trace per prompt with the scaling engine and the probe attached.

    prompts: user texts, chat-templated with the format's thinking opener (`build_prompt`); with
    `chat=False` they are used as full prompts. fmt: a ReasoningFormat, its name, or None (detected
    from the tokenizer / the model's recorded format). sampling: None = the format's default. Sample i
    gets the seed derive_seed(seed, str(i), 0). Returns [(GenResult, TraceLayers)] in prompt order;
    `on_result(result, trace_layers)` is called as each trace finishes.
    """
    from layerprobe.scaling.engine import (
        GenRequest,
        TraceGenerator,
        build_prompt,
        derive_seed,
    )
    from layerprobe.scaling.formats import ReasoningFormat, detect_format, get_format

    if isinstance(fmt, ReasoningFormat):
        rf = fmt
    elif isinstance(fmt, str):
        rf = get_format(fmt)
    else:
        rf = detect_format(loaded.tokenizer, loaded.reasoning_format)
    gen = TraceGenerator(loaded.model, loaded.tokenizer, rf, sampling)
    reqs = [
        GenRequest(
            key=i,
            prompt=build_prompt(loaded.tokenizer, rf, p) if chat else p,
            budget=budget,
            seed=derive_seed(seed, str(i), 0),
            wait=wait,
            answer_max=answer_max,
        )
        for i, p in enumerate(prompts)
    ]
    out: dict[int, tuple[Any, TraceLayers]] = {}
    with LayerProbe(loaded, lens=lens, lens_every=lens_every, lens_topk=lens_topk) as probe:
        for idx, res in gen.iter_generate(reqs, batch_size, observers=[probe]):
            tl = probe.pop(res.key)
            out[idx] = (res, tl)
            if on_result is not None:
                on_result(res, tl)
    return [out[i] for i in range(len(reqs))]
