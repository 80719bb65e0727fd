"""`layerprobe prune` as a job: compress a model (--drop LIST, or --method NAME with a size) and save a
checkpoint plain transformers can load, with the record of what was removed and the size kept."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.errors import UserError
from layerprobe.jobs.calibration_settings import CalibrationSettings

#: LaCo's options: settings key -> flag, in the order a refusal names them.
LACO_FLAGS = {
    "c": "--laco-c",
    "interval": "--laco-i",
    "low": "--laco-low",
    "high": "--laco-high",
    "threshold": "--laco-threshold",
    "mode": "--laco-mode",
}


@dataclass
class PruneSettings:
    """Everything `layerprobe prune` was asked for; `check()` refuses bad flags before any model is loaded."""

    model: str
    out: Path
    drop: str | None = None
    """--drop: original 0-based layer indices, as given ("20,21")."""
    method: str | None = None
    n_drop: int | None = None
    sparsity: float | None = None
    match_layers: int | None = None
    nm: str | None = None
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    laco: dict[str, Any] = field(default_factory=dict)
    """LaCo's options by LACO_FLAGS key (None: not given)."""
    force: bool = False
    device: str = "cpu"
    dtype: str = "auto"
    layers_path: str | None = None
    norm_path: str | None = None
    unembed_path: str | None = None
    # set by check()
    indices: list[int] = field(default_factory=list)
    """--drop parsed."""
    size: Any = None
    """The SizeRequest of --sparsity / --match-layers / --nm (None when none is given)."""

    def given_laco(self) -> list[str]:
        """The LaCo flags given, named."""
        return [LACO_FLAGS[k] for k, v in self.laco.items() if v is not None]

    def check(self) -> None:
        """Reject settings that cannot be right, before anything is loaded (UserError, exit 2)."""
        from layerprobe.prune.surgery import parse_layer_list

        if self.drop is not None and self.method is not None:
            raise UserError(
                "--drop and --method are exclusive: give the layers (--drop 20,21) or a method (--method shortgpt --n-drop 2)"
            )
        if self.drop is not None:
            given_laco = self.given_laco()
            if given_laco:
                raise UserError(f"{', '.join(given_laco)}: LaCo options apply only to --method laco")
            if self.n_drop is not None:
                raise UserError("--n-drop applies only with --method (with --drop the list says which layers go)")
            given = [
                f
                for f, v in (("--sparsity", self.sparsity), ("--match-layers", self.match_layers), ("--nm", self.nm))
                if v is not None
            ]
            if given:
                raise UserError(
                    f"{', '.join(given)}: a size applies only with --method (with --drop the list says which layers go)"
                )
            self.indices = parse_layer_list(self.drop)
            return
        if self.method is None:
            raise UserError("nothing to remove: give --drop LIST (e.g. 20,21) or --method NAME --n-drop K")
        self.size = size_request(self.sparsity, self.match_layers, self.nm)
        self._check_method()

    def _check_method(self) -> None:
        """--method with its size, LaCo options and calibration flags."""
        from layerprobe.prune.laco import check_laco_params
        from layerprobe.prune.methods import get_method

        m = get_method(self.method or "")
        n_drop, size = self.n_drop, self.size
        given_laco = self.given_laco()
        if m.name != "laco" and given_laco:
            raise UserError(f"{', '.join(given_laco)}: LaCo options apply only to --method laco")
        if m.kind == "depth" and m.takes_n_drop and size is None:
            if n_drop is not None and n_drop < 1:
                raise UserError(f"--n-drop {n_drop}: must be at least 1")
        elif m.kind == "depth" and not m.takes_n_drop and n_drop is not None:
            raise UserError(
                f"--n-drop does not apply to --method {m.name}: the number of removed layers follows from --laco-threshold"
            )
        m.check_request(n_drop, size)
        cs = self.calibration
        if m.needs_traces and (cs.calib is not None or cs.calib_dataset is not None):
            raise UserError(
                f"--method {m.name} reads the model's own reasoning traces: use --calib-traces N, not --calib / --calib-dataset"
            )
        opts = self.laco_options()
        if m.name == "laco":  # range checks that do not need the model; the layer range is checked after loading
            check_laco_params(
                10**9,
                opts.get("c", 4),
                opts.get("interval", 2),
                0,
                10**9 - 1,
                opts.get("threshold", 0.45),
                opts.get("mode", "paper"),
            )
        if m.needs_calibration:
            cs.check()

    def laco_options(self) -> dict[str, Any]:
        """The LaCo options given (laco()'s keyword arguments)."""
        return {k: v for k, v in self.laco.items() if v is not None}


@dataclass
class Pruned:
    """What `prune` saved: the compressed model, and the method's selection (None for --drop)."""

    model: Any
    selection: Any = None


def check_checkpoint_dir(out: Path, force: bool) -> None:
    """Refuse an --out that is unwritable, a file, or a non-empty directory that is not ours."""
    from layerprobe._io import check_writable
    from layerprobe.prune.surgery import PROVENANCE_FILE

    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / PROVENANCE_FILE).is_file():
            raise UserError(
                f"--out {out} is a non-empty directory that is not a layerprobe checkpoint; choose an empty or new directory"
            )
        if not force:
            raise UserError(f"--out {out} already holds a layerprobe checkpoint; pass --force to overwrite it")
    check_writable(out, "--out")


def prune(s: PruneSettings, say: Any) -> Pruned:
    """Check the settings, compress the model and save it to `s.out` (what it does shown on `say`, a
    rich Console on stderr)."""
    from layerprobe.models.loading import load_model
    from layerprobe.prune.surgery import drop_layers, save_model

    s.check()
    if s.drop is None:
        return _prune_with_method(s, say)
    check_checkpoint_dir(s.out, s.force)
    loaded = load_model(
        s.model, device=s.device, dtype=s.dtype, layers_path=s.layers_path, norm_path=s.norm_path, unembed_path=s.unembed_path
    )
    pruned = drop_layers(loaded, s.indices, method="manual")
    record_size(pruned, loaded, "depth", "manual", {"drop": sorted(s.indices)})
    save_model(pruned, s.out)
    return Pruned(pruned)


def _prune_with_method(s: PruneSettings, say: Any) -> Pruned:
    from layerprobe.jobs.execute import set_threads_for
    from layerprobe.models.loading import load_model
    from layerprobe.prune.calibration import traces_calibration
    from layerprobe.prune.laco import check_laco_params
    from layerprobe.prune.methods import get_method, prune_model
    from layerprobe.prune.methods.base import check_n_drop
    from layerprobe.prune.surgery import save_model

    m = get_method(s.method or "")
    n_drop, size, cs = s.n_drop, s.size, s.calibration
    opts = s.laco_options()
    cal = None
    if m.needs_calibration and cs.calib_traces is None and not m.needs_traces:
        cal = cs.load_early()
    check_checkpoint_dir(s.out, s.force)
    loaded = load_model(
        s.model, device=s.device, dtype=s.dtype, layers_path=s.layers_path, norm_path=s.norm_path, unembed_path=s.unembed_path
    )
    if size is not None and size.match_layers is not None and size.match_layers >= loaded.n_layers:
        raise UserError(
            f"--match-layers {size.match_layers}: the model has {loaded.n_layers} layers, so at most {loaded.n_layers - 1}"
        )
    set_threads_for(loaded)  # the toy on one thread: its matmuls are too small to share
    if m.takes_n_drop and n_drop is not None:
        check_n_drop(n_drop, loaded)  # before minutes of calibration traces
    if m.name == "laco":
        check_laco_params(
            loaded.n_layers,
            opts.get("c", 4),
            opts.get("interval", 2),
            opts.get("low"),
            opts.get("high"),
            opts.get("threshold", 0.45),
            opts.get("mode", "paper"),
        )
    if m.needs_calibration and cal is None:
        from layerprobe.prune.methods import default_traces

        n_traces = cs.calib_traces if cs.calib_traces is not None else default_traces(loaded)
        say.print(f"generating {n_traces} reasoning traces (up to {cs.trace_tokens} tokens each) ...")
        cal = traces_calibration(loaded, n_traces, cs.trace_tokens)
    if m.name == "laco":
        opts["log"] = lambda step: say.print(
            f"  merge at layer {step['base']} with {step['followers']}: similarity {step['similarity']:.4f} -> "
            + ("kept" if step["accepted"] else "rejected")
        )
    with say.status(f"pruning with {m.name} ..."):
        pruned, selection = prune_model(
            loaded, m.name, n_drop, cal, size=size, seq_len=cs.seq_len, batch_size=cs.batch_size, **opts
        )
    with say.status("measuring tokens/s ..."):
        add_speed(pruned, loaded)
    save_model(pruned, s.out, selection=selection.to_json())
    return Pruned(pruned, selection)


def size_request(sparsity: float | None, match_layers: int | None, nm: str | None) -> Any:
    """The size the flags ask for (a SizeRequest; None when none is given); UserError for a bad or doubled one."""
    if sparsity is None and match_layers is None and nm is None:
        return None
    from layerprobe.prune.size import SizeRequest, parse_nm

    return SizeRequest(match_layers=match_layers, sparsity=sparsity, nm=parse_nm(nm) if nm is not None else None)


def record_size(pruned: Any, base: Any, kind: str, method: str, request: dict[str, Any]) -> None:
    """Attach the compression record (kind, request, size counted on the tensors) to a model built without prune_model."""
    from layerprobe.prune.size import count_size, size_record

    pruned.extra = {
        **pruned.extra,
        "compression": {
            "kind": kind,
            "method": method,
            "request": request,
            "size": size_record(pruned, count_size(base), base.n_layers_original),
        },
    }
    add_speed(pruned, base)


def add_speed(pruned: Any, base: Any) -> None:
    """Measured greedy tokens/s of the pruned and the unpruned model on this machine, into the size record."""
    from layerprobe.prune.size import SPEED_NOTE, measure_tokens_per_s

    size = pruned.extra["compression"]["size"]
    mine, theirs = measure_tokens_per_s(pruned), measure_tokens_per_s(base)
    size.update(
        tokens_per_s=mine["tokens_per_s"],
        tokens_per_s_base=theirs["tokens_per_s"],
        speed_setup={k: v for k, v in mine.items() if k != "tokens_per_s"},
        speed_note=SPEED_NOTE,
    )


def describe_size(pruned: Any) -> str:
    """One line: what was removed and the size kept."""
    comp = pruned.extra.get("compression") or {}
    size = comp.get("size") or {}
    what = f"removed layers {pruned.dropped}" if pruned.dropped else f"{comp.get('kind', '')} compression"
    parts = [
        what,
        f"{size.get('nonzero_linear_weights', 0):,} of {size.get('linear_weights_base', 0):,} decoder linear weights kept "
        f"({100 * (size.get('kept_fraction') or 0):.1f} %, {size.get('layers_removed_equivalent') or 0:.2f} layers' worth removed)",
        f"{pruned.n_layers} layers",
    ]
    if size.get("tokens_per_s"):
        parts.append(f"{size['tokens_per_s']:.0f} tokens/s here (unpruned {size.get('tokens_per_s_base') or 0:.0f})")
    return "; ".join(parts)
