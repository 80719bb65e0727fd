"""A tiny real model whose next token is dictated by the last input token (for exact engine tests).

It runs the real model (so KV cache, masks and batching are exercised) and then adds a large bias to
the scripted token, so generation follows a known script.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class ScriptedModel(nn.Module):
    def __init__(self, base: nn.Module, script: dict[int, int], bias: float = 1e4) -> None:
        super().__init__()
        self.base = base
        self.config = base.config
        self.generation_config = base.generation_config
        self.script = script
        self.bias = bias

    def forward(self, input_ids: torch.Tensor, cache=None, **kw):  # `cache`: the KV cache keyword of transformers >= 5.24
        if cache is not None:
            kw["cache"] = cache
        out = self.base(input_ids=input_ids, **kw)
        last = input_ids[:, -1].tolist()
        for b, tok in enumerate(last):
            if tok in self.script:
                out.logits[b, -1, self.script[tok]] += self.bias
        return out
