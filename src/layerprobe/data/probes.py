"""Probes as declarations: the one table of the per-token, per-layer columns a trace's probe file holds.

A probe (`Probe`) declares
- its columns (`Column`): the name (the array's name in the .npz layer file and the field of the layer
  aggregates), what one value is, whether it is a float statistic or a rank, and how the report shows
  it (its header in the layer table, the title of its layer x position heat map);
- how it is computed: `compute(inputs) -> (rows, n_columns, layers)` float32 tensor from one forward
  pass's residual stream (`layerprobe.probe.columns.StepInputs`), the same function live (during
  generation), by prefill and through TransformerLens; a string "module:function" is imported when
  first used (the built-in probes, so that reading a run needs no torch);
- `lens=True`: it reads the logit lens and runs only on the steps where the lens runs (NaN, rank −1,
  elsewhere and everywhere when the lens is off).

The built-in probes, in the column order every layer file has used since schema_version 1:
"residual" (block_influence, norm) and "lens" (jsd, entropy, top1_agree, rank). `register_probe` adds
one after them (`registered_probe` for a block, e.g. a test); the probe arrays, the layer files, the
layer aggregates and the report's layer table then carry its columns with no other change. This module
imports neither numpy nor torch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

from layerprobe.errors import UserError
from layerprobe.rules import is_name


@dataclass(frozen=True)
class Column:
    """One (tokens, layers) array of a probe."""

    name: str
    """The array's name in the layer file, the statistic's name (`TraceLayers.stat`) and, for a float
    column, the field of the layer aggregates (`PerLayer`)."""
    doc: str
    """What one value is (one token at one layer)."""
    kind: Literal["float", "rank"] = "float"
    """float: float32 in memory, float16 on disk (float32 when a value would overflow float16), NaN where
    not computed; rank: int32, −1 where not computed, aggregated as `<name>_mean` over computed values."""
    label: str | None = None
    """Header of its column in the report's per-layer table (None: not in the table)."""
    fmt: str = "f3"
    """How the report writes its values (report.numbers: s, f3, p, ...)."""
    heatmap: str | None = None
    """Title of its layer x relative-position heat map in the report (None: no heat map)."""

    @property
    def aggregate(self) -> str:
        """The field of the layer aggregates holding its per-layer mean."""
        return f"{self.name}_mean" if self.kind == "rank" else self.name


@dataclass(frozen=True)
class Probe:
    """A per-token, per-layer measurement: its columns and how it is computed."""

    name: str
    """Its name in the registry."""
    columns: tuple[Column, ...]
    """What it writes, in order: compute returns one slice per column."""
    compute: Callable[[Any], Any] | str
    """(StepInputs for R rows) -> (R, len(columns), L) float32 tensor; or "module:function"."""
    lens: bool = False
    """Reads the logit lens: computed only on the steps where the lens runs."""


_RESIDUAL = Probe(
    "residual",
    (
        Column(
            "block_influence",
            "1 − cos(layer input, layer output) at that position (a zero vector counts as cos 0)",
            label="BI",
            fmt="s",
        ),
        Column("norm", "‖layer output‖₂: the residual stream after the layer, before any final norm"),
    ),
    "layerprobe.probe.columns:residual",
)
_LENS = Probe(
    "lens",
    (
        Column(
            "jsd",
            "logit-lens JSD(p_final ‖ p_l) in nats, p_l = softmax(unembed(final_norm(h_l)))",
            label="lens JSD to own output",
            heatmap="logit-lens JSD to the output (nats)",
        ),
        Column("entropy", "entropy of the logit-lens distribution p_l in nats", heatmap="logit-lens entropy (nats)"),
        Column("top1_agree", "1.0 where argmax p_l == argmax p_final, else 0.0", label="top-1 = output", fmt="p"),
        Column("rank", "rank of the token produced at that step under p_l (0 = top)", kind="rank"),
    ),
    "layerprobe.probe.columns:logit_lens",
    lens=True,
)

#: The built-in probes (their columns are the fixed layout of schema_version 1 layer files).
BUILTIN: tuple[Probe, ...] = (_RESIDUAL, _LENS)
_REGISTRY: dict[str, Probe] = {p.name: p for p in BUILTIN}


def probes() -> tuple[Probe, ...]:
    """Every registered probe, built-in first, then in the order they were registered."""
    return tuple(_REGISTRY.values())


def columns() -> tuple[Column, ...]:
    """Every column of every registered probe, in the order of the probe arrays."""
    return tuple(c for p in _REGISTRY.values() for c in p.columns)


def builtin_columns() -> tuple[Column, ...]:
    """The columns every layer file has (the built-in probes')."""
    return tuple(c for p in BUILTIN for c in p.columns)


def column(name: str) -> Column | None:
    """The registered column called `name`, or None."""
    return next((c for c in columns() if c.name == name), None)


def float_columns() -> tuple[str, ...]:
    """Names of the registered float columns (NaN-skipping means per layer)."""
    return tuple(c.name for c in columns() if c.kind == "float")


def heatmap_columns() -> tuple[Column, ...]:
    """Registered columns with a layer x position heat map, in column order."""
    return tuple(c for c in columns() if c.heatmap)


#: Names a column cannot take: the other arrays of a layer file, and names of the aggregates' model.
RESERVED = frozenset(
    {"schema_version", "kind", "key", "layers", "n_layers_original", "tokens", "lens", "lens_every", "lens_positions"}
    | {"extra", "values", "from_summary"}
)


def register_probe(probe: Probe) -> Probe:
    """Add `probe` after the registered ones. UserError for a name or column name already taken or
    reserved, a column name that is not a plain identifier, or a probe without columns."""
    if probe.name in _REGISTRY:
        raise UserError(f"a probe called '{probe.name}' is already registered")
    if not probe.columns:
        raise UserError(f"probe '{probe.name}' declares no column")
    taken = {c.name for c in columns()} | {c.aggregate for c in columns()}
    for c in probe.columns:
        if not (c.name.isidentifier() and is_name(c.name)):
            raise UserError(f"probe column name '{c.name}' is not a plain identifier (letters, digits, _)")
        if {c.name, c.aggregate} & RESERVED or c.name.startswith("model_"):
            raise UserError(f"probe column name '{c.name}' is reserved (the layer files and aggregates use it)")
        if c.name in taken or c.aggregate in taken:
            raise UserError(f"probe column '{c.name}' is already declared")
        taken |= {c.name, c.aggregate}
    _REGISTRY[probe.name] = probe
    return probe


def unregister_probe(name: str) -> None:
    """Remove a registered probe (a built-in one cannot be removed: old files hold its columns)."""
    if any(p.name == name for p in BUILTIN):
        raise UserError(f"'{name}' is a built-in probe and cannot be removed")
    _REGISTRY.pop(name, None)


@contextmanager
def registered_probe(probe: Probe) -> Iterator[Probe]:
    """`probe` registered for the block, removed afterwards (also on errors)."""
    register_probe(probe)
    try:
        yield probe
    finally:
        unregister_probe(probe.name)
