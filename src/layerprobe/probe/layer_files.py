"""Per-token, per-layer probe arrays of one trace (`TraceLayers`) and their .npz files.

In memory every statistic is float32 (rank int32); on disk the statistics are float16 (small
files; ~3 significant digits, which is what plots and settling depths need) except:

- `rank` is int32: float16 holds integers exactly only up to 2048, and vocabularies are ~150k;
- `norm` is written as float32 when a value would overflow float16 (|x| > 65504), float16 otherwise;
  the loader accepts either.

npz keys (schema_version 1): schema_version, kind="trace_layers", key (str), layers (L,) int16 =
original layer indices, n_layers_original, tokens (T,) int32 (the token produced at each step,
i.e. GenResult.all_ids), block_influence / norm / jsd / entropy / top1_agree (T, L), rank (T, L)
int32, then the columns of any probe registered beyond the built-in ones (layerprobe.data.probes:
float16/float32 (T, L) for a float column, int32 for a rank), lens ("full" | "topk:K" | "none"),
lens_every, lens_positions (steps where the lens ran). Statistics of steps where the lens did not
run are NaN (rank −1). The columns, their order and their dtypes come from the declarations; a float
column is float16 unless a value would overflow it (then float32, as `norm` always was).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from layerprobe.data.probes import Column, builtin_columns, column, columns

SCHEMA_VERSION = 1
#: The built-in float statistics (registered probes may add more: `data.probes.float_columns()`).
STATS = tuple(c.name for c in builtin_columns() if c.kind == "float")
_F16_MAX = float(np.finfo(np.float16).max)


@dataclass
class TraceLayers:
    """Per-layer statistics of every generated token of one trace.

    Row n belongs to step n of the trace: the forward pass whose last position produced
    `tokens[n]` (= GenResult.all_ids[n]); column i belongs to current layer i, whose original
    index is `layers[i]`.

    - block_influence: 1 − cos(layer input, layer output) at that position (a zero vector, e.g. the
      embedding of a padding token fed as input, counts as cos 0);
    - norm: ‖layer output‖₂ (the residual stream after the layer, before any final norm);
    - jsd: JSD(p_final ‖ p_l) in nats, p_l = softmax(unembed(final_norm(h_l))) (logit lens),
      p_final = the lens at the last layer = the model's own next-token distribution;
    - entropy: entropy of p_l in nats;
    - top1_agree: 1.0 where argmax p_l == argmax p_final, else 0.0;
    - rank: rank of tokens[n] under p_l (0 = top); −1 where the lens did not run.
    """

    key: Any
    layers: np.ndarray  # (L,) original indices
    tokens: np.ndarray  # (T,) int32
    block_influence: np.ndarray  # (T, L) float32
    norm: np.ndarray
    jsd: np.ndarray
    entropy: np.ndarray
    top1_agree: np.ndarray
    rank: np.ndarray  # (T, L) int32
    lens: str = "full"  # full | topk:K | none
    lens_every: int = 1
    lens_positions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int32))
    n_layers_original: int | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    """(T, L) columns of registered probes beyond the built-in ones, by column name."""

    #: The built-in probes' columns, kept as the fields above (every layer file since schema_version 1).
    COLUMNS: ClassVar[tuple[str, ...]] = tuple(c.name for c in builtin_columns())

    @classmethod
    def from_columns(cls, cols: dict[str, np.ndarray], **meta: Any) -> TraceLayers:
        """A TraceLayers from named (T, L) columns (every built-in one, and any registered one) and
        the other fields in `meta`."""
        rest = {k: v for k, v in cols.items() if k not in cls.COLUMNS}
        builtin: dict[str, Any] = {k: cols[k] for k in cls.COLUMNS}
        return cls(**builtin, **meta, extra=rest)

    @property
    def n_tokens(self) -> int:
        return int(self.tokens.shape[0])

    @property
    def n_layers(self) -> int:
        return int(self.layers.shape[0])

    def has(self, name: str) -> bool:
        """Whether the trace holds the column `name` (a built-in one always does)."""
        return name in self.COLUMNS or name in self.extra

    def stat(self, name: str) -> np.ndarray:
        """The (T, L) array called `name` (a built-in column or one of `extra`)."""
        if name in self.COLUMNS:
            return getattr(self, name)
        if name in self.extra:
            return self.extra[name]
        raise KeyError(f"unknown statistic '{name}' (valid: {', '.join((*self.COLUMNS, *self.extra))})")


def _disk(c: Column, a: Any) -> np.ndarray:
    """A column as written: rank int32; float float16, or float32 where a value would overflow float16."""
    if c.kind == "rank":
        return np.asarray(a, dtype=np.int32)
    a = np.asarray(a, dtype=np.float32)
    finite = a[np.isfinite(a)]
    return a.astype(np.float32 if finite.size and np.abs(finite).max() > _F16_MAX else np.float16)


def save_trace_layers(path: str | Path, tl: TraceLayers) -> Path:
    """Write `tl` as a compressed .npz (see the module docstring for the keys), atomically and durably
    (on disk before anything that refers to it is written)."""
    from layerprobe._io import write_atomic

    path = Path(path)
    arrays: dict[str, Any] = {
        "schema_version": np.int32(SCHEMA_VERSION),
        "kind": np.array("trace_layers"),
        "key": np.array(str(tl.key)),
        "layers": np.asarray(tl.layers, dtype=np.int16),
        "n_layers_original": np.int32(-1 if tl.n_layers_original is None else tl.n_layers_original),
        "tokens": np.asarray(tl.tokens, dtype=np.int32),
        **{c.name: _disk(c, tl.stat(c.name)) for c in columns() if tl.has(c.name)},
        "lens": np.array(tl.lens),
        "lens_every": np.int32(tl.lens_every),
        "lens_positions": np.asarray(tl.lens_positions, dtype=np.int32),
    }
    # a file handle: np.savez would append ".npz" to other suffixes
    return write_atomic(path, lambda fh: np.savez_compressed(fh, **arrays))


class DamagedFile(ValueError):
    """A stored array file that cannot be read (truncated, overwritten, emptied, of another layout)."""


@contextmanager
def opened_npz(path: str | Path, kind: str) -> Iterator[Any]:
    """The arrays of a layerprobe .npz of `kind`, with every way of failing to read it turned into
    DamagedFile (a missing file, a text file, a truncated or empty zip, a missing array, pickled data)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            _check_schema(data, kind, path)
            yield data
    except DamagedFile:
        raise
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise DamagedFile(f"{path}: cannot be read ({type(exc).__name__}: {str(exc).strip()[:120]})") from None


def _check_schema(data: Any, kind: str, path: Path) -> None:
    version = int(data["schema_version"]) if "schema_version" in data else None
    if version != SCHEMA_VERSION:
        raise ValueError(f"{path}: schema_version {version}, this layerprobe reads {SCHEMA_VERSION}")
    if "kind" in data and str(data["kind"]) != kind:
        raise ValueError(f"{path}: holds '{data['kind']}', not '{kind}'")


def load_trace_layers(path: str | Path) -> TraceLayers:
    """Read a file written by `save_trace_layers`; statistics come back as float32 (rank int32).

    The key comes back as a string (it is stored as one). DamagedFile when it cannot be read."""
    with opened_npz(path, "trace_layers") as data:
        n_orig = int(data["n_layers_original"])
        cols = {}
        for name in data.files:  # the built-in columns (a file without one is damaged) and registered ones
            c = column(name)
            if c is not None:
                cols[name] = np.asarray(data[name], dtype=np.int32 if c.kind == "rank" else np.float32)
        for name in TraceLayers.COLUMNS:
            if name not in cols:
                raise KeyError(f"{name} is not a file in the archive")
        return TraceLayers.from_columns(
            cols,
            key=str(data["key"]),
            layers=np.asarray(data["layers"], dtype=np.int16),
            tokens=np.asarray(data["tokens"], dtype=np.int32),
            lens=str(data["lens"]),
            lens_every=int(data["lens_every"]),
            lens_positions=np.asarray(data["lens_positions"], dtype=np.int32),
            n_layers_original=None if n_orig < 0 else n_orig,
        )


def load_trace_tokens(path: str | Path) -> list[int]:
    """Only the token ids of a trace's probe file (what teacher forcing and restoration run along);
    DamagedFile when it cannot be read."""
    with opened_npz(path, "trace_layers") as data:
        return np.asarray(data["tokens"], dtype=np.int64).tolist()
