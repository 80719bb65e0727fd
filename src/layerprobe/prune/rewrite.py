"""A new model with some submodules replaced: the explicit way weights change (sparsity masks, narrower
FFNs). The input model is left untouched; every module on the path from the root to a replaced module is
shallow-cloned, everything else (embeddings, the other layers, norms) is shared, as in `drop_layers`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn

from layerprobe.models.loaded import LoadedModel
from layerprobe.prune.surgery import shallow_clone


def linear_with_weight(linear: nn.Linear, weight: torch.Tensor) -> nn.Linear:
    """A shallow clone of `linear` whose weight is `weight` (a new parameter); its bias stays shared."""
    if tuple(weight.shape) != tuple(linear.weight.shape):
        raise ValueError(f"new weight {tuple(weight.shape)} does not match {tuple(linear.weight.shape)}")
    new = shallow_clone(linear)
    new._parameters["weight"] = nn.Parameter(weight.to(linear.weight.dtype), requires_grad=linear.weight.requires_grad)
    return new  # type: ignore[return-value]


def narrow_linear(linear: nn.Linear, keep: torch.Tensor, dim: int) -> nn.Linear:
    """A new nn.Linear keeping the rows (dim 0, outputs) or columns (dim 1, inputs) listed in `keep`."""
    w = linear.weight.detach().index_select(dim, keep.to(linear.weight.device)).clone()
    bias = linear.bias
    if bias is not None and dim == 0:
        b: torch.Tensor | None = bias.detach().index_select(0, keep.to(bias.device)).clone()
    else:
        b = None if bias is None else bias.detach().clone()
    new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None, device=w.device, dtype=w.dtype)
    with torch.no_grad():
        new.weight.copy_(w)
        if b is not None:
            assert new.bias is not None
            new.bias.copy_(b)
    new.train(linear.training)
    return new


def replace_modules(
    loaded: LoadedModel,
    replacements: Mapping[str, nn.Module],
    *,
    config_updates: Mapping[str, Any] | None = None,
    method: str | None = None,
) -> LoadedModel:
    """A new LoadedModel in which each dotted path (from the causal LM's root, e.g.
    `model.layers.3.mlp.down_proj`) holds the given module. `config_updates` are set on a copy of the
    config, which every cloned module that held the old config gets (the root's config is what
    `save_pretrained` writes). `loaded` is not modified."""
    old_config = loaded.model.config
    new_config = copy.deepcopy(old_config)
    for key, value in (config_updates or {}).items():
        setattr(new_config, key, value)
    root = shallow_clone(loaded.model)
    cloned: dict[str, nn.Module] = {"": root}
    for path, module in replacements.items():
        parts = path.split(".")
        parent = root
        prefix = ""
        for part in parts[:-1]:
            prefix = f"{prefix}.{part}" if prefix else part
            if prefix not in cloned:
                child = parent._modules.get(part)
                if child is None:
                    raise ValueError(f"no module '{prefix}' in {type(loaded.model).__name__}")
                cloned[prefix] = shallow_clone(child)
                parent._modules[part] = cloned[prefix]
            parent = cloned[prefix]
        if parts[-1] not in parent._modules:
            raise ValueError(f"no module '{path}' in {type(loaded.model).__name__}")
        parent._modules[parts[-1]] = module
    for module in cloned.values():
        if getattr(module, "config", None) is old_config:
            module.config = new_config
    if getattr(loaded.model, "generation_config", None) is not None:
        root.generation_config = copy.deepcopy(loaded.model.generation_config)
    return dataclasses.replace(loaded, model=root, method=method or loaded.method, extra=dict(loaded.extra))
