"""The LoadedModel record: a HF causal LM plus everything layerprobe needs to know about it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from layerprobe.models.arch import ArchSpec, get_submodule
from layerprobe.models.provenance import Provenance


@dataclass
class LoadedModel:
    """A causal LM with its tokenizer, architecture map and provenance.

    `layer_map[i]` is the original index of the model's current decoder layer i; for an unpruned
    model it is `[0, 1, ..., L-1]`.
    """

    model: Any  # transformers.PreTrainedModel
    tokenizer: Any  # transformers.PreTrainedTokenizerBase | None
    name: str
    source: str
    family: str
    arch: ArchSpec
    layer_map: list[int]
    n_layers_original: int
    revision: str | None = None
    source_kind: str = "hub"  # hub | local | gguf | alias-gguf | toy
    reasoning_format: str | None = None
    method: str | None = None  # how the dropped layers were chosen (None for the base model)
    calibration: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_toy(self) -> bool:
        """The embedded toy, or a checkpoint trained like it (the toy's vocabulary)."""
        from layerprobe.models.aliases import is_toy_tokenizer

        return self.source_kind == "toy" or is_toy_tokenizer(self.tokenizer)

    @property
    def n_layers(self) -> int:
        """Number of decoder layers the model has now."""
        return len(self.layer_map)

    @property
    def compression_kind(self) -> str:
        """depth (layers removed, or none), width, unstructured or semi-structured."""
        comp = self.extra.get("compression")
        return str(comp.get("kind", "depth")) if isinstance(comp, dict) else "depth"

    @property
    def dropped(self) -> list[int]:
        """Original indices of the decoder layers that were removed."""
        kept = set(self.layer_map)
        return [i for i in range(self.n_layers_original) if i not in kept]

    @property
    def layers(self) -> nn.ModuleList:
        """The decoder layer stack."""
        layers = get_submodule(self.model, self.arch.layers)
        assert isinstance(layers, nn.ModuleList)
        return layers

    @property
    def final_norm(self) -> nn.Module:
        """The norm applied after the last decoder layer."""
        return get_submodule(self.model, self.arch.final_norm)

    @property
    def unembed(self) -> nn.Module:
        """The output projection to vocabulary logits."""
        return get_submodule(self.model, self.arch.unembed)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def provenance(self) -> Provenance:
        """What produced this model: recorded in every output that uses it."""
        from layerprobe._version import __version__

        return Provenance(
            name=self.name,
            source=self.source,
            source_kind=self.source_kind,
            revision=self.revision,
            family=self.family,
            dtype=str(self.dtype).removeprefix("torch."),
            n_layers_original=self.n_layers_original,
            n_layers=self.n_layers,
            dropped=self.dropped,
            layer_map=list(self.layer_map),
            method=self.method,
            calibration=self.calibration,
            reasoning_format=self.reasoning_format,
            compression=self.extra.get("compression"),
            layerprobe_version=__version__,
        )
