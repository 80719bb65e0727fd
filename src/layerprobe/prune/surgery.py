"""Layer surgery: remove decoder layers exactly (docs/definitions.md#layer-indices-and-surgery) and save the result.

`drop_layers` returns a new LoadedModel whose unchanged modules (embeddings, kept layers, norm,
unembedding) share their weights with the input model: nothing is copied, and the input model is not
modified. Modules are shallow-cloned only where something differs (the layer stack, the config and
each kept layer's `layer_idx`, which indexes the KV cache).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch.nn as nn

from layerprobe._io import write_text_atomic
from layerprobe.errors import UserError
from layerprobe.models.loaded import LoadedModel
from layerprobe.models.provenance import PROVENANCE_FILE


def parse_layer_list(text: str, flag: str = "--drop", what: str = "layer indices", example: str = "20,21") -> list[int]:
    """Parse '20,21' (spaces allowed) into [20, 21]; UserError on anything that is not a list of integers.
    `what` and `example` name the values in the error message (e.g. "integers", "256,512" for budgets)."""
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(p == "" for p in parts):
        raise UserError(f"{flag} '{text}': expected comma-separated {what} such as {example}")
    out: list[int] = []
    for p in parts:
        try:
            out.append(int(p))
        except ValueError:
            raise UserError(
                f"{flag} '{text}': '{p}' is not an integer (expected comma-separated {what} such as {example})"
            ) from None
    return out


def validate_drop(indices: Sequence[int], loaded: LoadedModel, flag: str = "--drop") -> list[int]:
    """Check original-layer indices to remove from `loaded`; return them sorted.

    Indices are 0-based indices of the original model's layers and must be present in the model now.
    """
    n = loaded.n_layers_original
    present = set(loaded.layer_map)
    seen: set[int] = set()
    for i in indices:
        if i < 0:
            raise UserError(f"{flag}: layer {i} is negative (valid: 0..{n - 1}, original 0-based indices)")
        if i >= n:
            raise UserError(f"{flag}: layer {i} is out of range (the model has {n} layers: 0..{n - 1})")
        if i in seen:
            raise UserError(f"{flag}: layer {i} is listed twice")
        if i not in present:
            raise UserError(f"{flag}: layer {i} was already removed from this model (present: {sorted(present)})")
        seen.add(i)
    if not indices:
        raise UserError(f"{flag}: no layers given")
    if len(seen) >= len(present):
        raise UserError(f"{flag}: cannot remove all {len(present)} layers; keep at least one")
    return sorted(seen)


def shallow_clone(module: nn.Module) -> nn.Module:
    """A new module object sharing parameters, buffers and children, with its own containers and hooks."""
    new = copy.copy(module)
    for key, value in module.__dict__.items():
        if key.startswith("_") and isinstance(value, dict):
            new.__dict__[key] = value.copy()
    return new


def set_layer_idx(module: nn.Module, idx: int) -> None:
    """Set a module's `layer_idx` (the KV-cache index of an attention module)."""
    setattr(module, "layer_idx", idx)  # noqa: B010 - nn.Module types attribute assignment as Tensor | Module only


def _clone_with_layer_idx(module: nn.Module, new_idx: int) -> nn.Module:
    """Shallow-clone `module` and every descendant that carries `layer_idx`, setting it to `new_idx`."""
    new = shallow_clone(module)
    if isinstance(getattr(module, "layer_idx", None), int):
        set_layer_idx(new, new_idx)
    for name, child in module._modules.items():
        if child is not None and any(isinstance(getattr(m, "layer_idx", None), int) for m in child.modules()):
            new._modules[name] = _clone_with_layer_idx(child, new_idx)
    return new


def pruned_config(config: Any, keep: Sequence[int], per_layer_keys: Iterable[str]) -> Any:
    """A copy of `config` for a model that keeps only the current layers at positions `keep`."""
    new = copy.deepcopy(config)
    n_before = int(config.num_hidden_layers)
    new.num_hidden_layers = len(keep)
    for key in per_layer_keys:
        value = getattr(config, key, None)
        if isinstance(value, (list, tuple)):
            if len(value) != n_before:
                raise ValueError(f"config.{key} has {len(value)} entries for {n_before} layers")
            setattr(new, key, type(value)(value[i] for i in keep))
    mwl = getattr(config, "max_window_layers", None)  # Qwen2: layers >= this index use sliding windows
    if isinstance(mwl, int):
        new.max_window_layers = sum(1 for i in keep if i < mwl)
    return new


def drop_layers(loaded: LoadedModel, indices: Sequence[int], method: str | None = None, *, checked: bool = False) -> LoadedModel:
    """A new LoadedModel without the given original decoder layers; `loaded` is left unchanged.

    Kept layers share weights with `loaded` (no copy). Their attention `layer_idx` is renumbered so the
    KV cache stays consistent, `num_hidden_layers` and per-layer config lists are updated, and the new
    model's `layer_map` records each remaining layer's original index. The indices are checked with
    `validate_drop` unless `checked` says the caller did that already (a job that checked its flags).
    """
    drop = sorted(indices) if checked else validate_drop(list(indices), loaded)
    drop_set = set(drop)
    keep_pos = [pos for pos, orig in enumerate(loaded.layer_map) if orig not in drop_set]
    new_map = [loaded.layer_map[pos] for pos in keep_pos]

    old_layers = loaded.layers
    new_layers = nn.ModuleList(_clone_with_layer_idx(old_layers[pos], j) for j, pos in enumerate(keep_pos))
    new_config = pruned_config(loaded.model.config, keep_pos, loaded.arch.per_layer_config)

    # Clone the chain of modules from the root down to the layer stack's parent.
    parts = loaded.arch.layers.split(".")
    root = shallow_clone(loaded.model)
    parent = root
    for part in parts[:-1]:
        child = shallow_clone(getattr(parent, part))
        parent._modules[part] = child
        parent = child
    parent._modules[parts[-1]] = new_layers
    old_config = loaded.model.config
    for module in [root, *(_chain_modules(root, parts[:-1]))]:
        if getattr(module, "config", None) is old_config:
            module.config = new_config
    if getattr(loaded.model, "generation_config", None) is not None:
        root.generation_config = copy.deepcopy(loaded.model.generation_config)

    previous = loaded.dropped
    return dataclasses.replace(
        loaded,
        model=root,
        layer_map=new_map,
        method=method or (loaded.method if previous else "manual"),
        extra=dict(loaded.extra),
    )


def _chain_modules(root: nn.Module, parts: Sequence[str]) -> list[nn.Module]:
    out, obj = [], root
    for part in parts:
        obj = getattr(obj, part)
        out.append(obj)
    return out


def save_model(
    loaded: LoadedModel, out_dir: str | Path, *, selection: dict[str, Any] | None = None, healing: dict[str, Any] | None = None
) -> Path:
    """Write a checkpoint that plain `AutoModelForCausalLM.from_pretrained` loads.

    Safetensors weights with contiguous layer names, config, tokenizer, and `layerprobe.json`
    (provenance: source model, dropped original layers, method, layer map, version).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loaded.model.save_pretrained(out, safe_serialization=True)
    if loaded.tokenizer is not None:
        loaded.tokenizer.save_pretrained(out)
    prov = loaded.provenance().model_copy(update={"selection": selection, "healing": healing})
    write_text_atomic(out / PROVENANCE_FILE, prov.model_dump_json(indent=2) + "\n")
    return out
