"""`layerprobe.json`: what produced a checkpoint written by layerprobe (prune, heal), checked against
the checkpoint's own config when it is loaded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from layerprobe.errors import UserError

PROVENANCE_FILE = "layerprobe.json"
PROVENANCE_SCHEMA_VERSION = 2
"""2: `compression` (what kind of compression, the size asked and the size counted). Version 1 files
lack only that optional field."""


class Provenance(BaseModel):
    """layerprobe.json next to a checkpoint's weights."""

    model_config = ConfigDict(extra="ignore", protected_namespaces=(), use_attribute_docstrings=True)

    schema_version: int = PROVENANCE_SCHEMA_VERSION
    """Version of this file's layout."""
    name: str
    """The model as it was named when loaded (alias, hub id, path)."""
    source: str | dict[str, Any]
    """Where its weights came from."""
    source_kind: str | None = None
    """toy, hub, local, gguf or config."""
    revision: str | None = None
    """Hub revision or content hash."""
    family: str | None = None
    """Architecture family."""
    dtype: str | None = None
    """Parameter dtype when saved."""
    n_layers_original: int
    """Decoder layers of the unpruned model."""
    n_layers: int
    """Decoder layers of this checkpoint."""
    dropped: list[int] = Field(default_factory=list)
    """Original layers removed."""
    layer_map: list[int]
    """Layer i of this checkpoint is original layer layer_map[i]."""
    method: str | None = None
    """Pruning method that chose the layers."""
    calibration: dict[str, Any] | None = None
    """What the method was calibrated on."""
    reasoning_format: str | None = None
    """Reasoning format declared for the model."""
    selection: dict[str, Any] | None = None
    """The pruning method's scores and choice."""
    healing: dict[str, Any] | None = None
    """How the pruned model was fine-tuned afterwards (layerprobe heal), if it was."""
    compression: dict[str, Any] | None = None
    """What the compression removed and how much: kind (depth, width, unstructured, semi-structured),
    method, the size asked (match_layers, sparsity, nm or n_drop) and the size counted on the saved
    tensors (decoder parameters, linear weights and their non-zeros, FLOPs per token, tokens/s)."""
    layerprobe_version: str = ""
    """layerprobe version that wrote the checkpoint."""


def read_provenance(checkpoint: Path, n_layers: int) -> Provenance | None:
    """The checkpoint's layerprobe.json, validated and checked against its config's layer count;
    None when there is none. A file that is unreadable or disagrees with the weights is a UserError
    (it is never trusted over the checkpoint itself)."""
    path = Path(checkpoint) / PROVENANCE_FILE
    if not path.is_file():
        return None
    try:
        prov = Provenance.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError) as exc:
        what = exc.errors()[0]["msg"] if isinstance(exc, ValidationError) else str(exc)
        raise UserError(
            f"{path} is not a valid layerprobe.json ({what}); delete it to load the checkpoint as an unpruned model"
        ) from None
    lm = prov.layer_map
    problems = []
    if len(lm) != n_layers:
        problems.append(f"its layer_map has {len(lm)} entries but the checkpoint has {n_layers} layers")
    if any(b <= a for a, b in zip(lm, lm[1:])):
        problems.append("its layer_map is not increasing")
    if lm and (min(lm) < 0 or max(lm) >= prov.n_layers_original):
        problems.append(f"its layer_map leaves 0..{prov.n_layers_original - 1}")
    d = prov.dropped
    if any(not 0 <= i < prov.n_layers_original for i in d) or len(set(d)) != len(d) or set(d) & set(lm):
        problems.append(
            f"its dropped layers {d} are not distinct layers of 0..{prov.n_layers_original - 1} outside its layer_map"
        )
    if problems:
        raise UserError(
            f"{path} disagrees with the checkpoint ({'; '.join(problems)}); delete it to load the checkpoint as an unpruned model"
        )
    return prov
