"""`layerprobe influence`: per-layer block influence and angular distance on calibration text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from layerprobe.cli.common import (
    BatchSizeOpt,
    CalibDatasetOpt,
    CalibDocsOpt,
    CalibOpt,
    CalibTracesOpt,
    DeviceOpt,
    DtypeOpt,
    LayersPathOpt,
    ModelOpt,
    NormPathOpt,
    SeqLenOpt,
    TraceTokensOpt,
    UnembedPathOpt,
    check_output_file,
    console,
)
from layerprobe.errors import UserError

INFLUENCE_SCHEMA_VERSION = 1


def check_calibration_flags(
    calib: Path | None,
    calib_dataset: str | None,
    calib_traces: int | None,
    calib_docs: int,
    trace_tokens: int,
    seq_len: int,
    batch_size: int,
) -> None:
    """Reject bad calibration flags before any model is loaded."""
    given = [
        f for f, v in (("--calib", calib), ("--calib-dataset", calib_dataset), ("--calib-traces", calib_traces)) if v is not None
    ]
    if len(given) > 1:
        raise UserError(f"{' and '.join(given)} are exclusive: give one calibration source")
    if calib_traces is not None and calib_traces < 1:
        raise UserError(f"--calib-traces {calib_traces}: must be at least 1")
    if calib_docs < 1:
        raise UserError(f"--calib-docs {calib_docs}: must be at least 1")
    if trace_tokens < 1:
        raise UserError(f"--trace-tokens {trace_tokens}: must be at least 1")
    if seq_len < 2:
        raise UserError(f"--seq-len {seq_len}: must be at least 2")
    if batch_size < 1:
        raise UserError(f"--batch-size {batch_size}: must be at least 1")


def load_calibration_early(calib: Path | None, calib_dataset: str | None, calib_docs: int):
    """Read a file / data set / the embedded text now (so mistakes fail before the model loads);
    None for traces, which need the model."""
    from layerprobe.prune.calibration import (
        calibration_from_dataset,
        calibration_from_file,
        embedded_calibration,
    )

    if calib is not None:
        return calibration_from_file(calib, calib_docs)
    if calib_dataset is not None:
        return calibration_from_dataset(calib_dataset, calib_docs)
    return embedded_calibration(calib_docs)


def influence_json(loaded: Any, scores: Any, calibration: dict[str, Any], n_max: int) -> dict[str, Any]:
    """The `--json` document of docs/definitions.md#influence-json: one entry per original layer present in the model."""
    ranking = scores.bi_ranking()
    rank = {orig: r + 1 for r, orig in enumerate(ranking)}
    layers = []
    for pos, orig in enumerate(scores.layer_map):
        entry: dict[str, Any] = {
            "layer": orig,
            "position": pos,
            "block_influence": scores.block_influence[pos],
            "angular_distance": scores.angular[1][pos],
            "rank": rank[orig],
        }
        if n_max > 1:
            entry["angular_distances"] = {
                str(n): scores.angular[n][pos] for n in range(1, n_max + 1) if pos < len(scores.angular[n])
            }
        layers.append(entry)
    return {
        "schema_version": INFLUENCE_SCHEMA_VERSION,
        "model": loaded.provenance().model_dump(mode="json"),
        "calibration": calibration,
        "n_tokens": scores.n_tokens,
        "n_max": n_max,
        "rank": "1 = lowest block influence (the first layer ShortGPT removes)",
        "layers": layers,
    }


def influence(
    model: ModelOpt,
    calib: CalibOpt = None,
    calib_dataset: CalibDatasetOpt = None,
    calib_traces: CalibTracesOpt = None,
    calib_docs: CalibDocsOpt = 64,
    trace_tokens: TraceTokensOpt = 128,
    seq_len: SeqLenOpt = 256,
    batch_size: BatchSizeOpt = 8,
    n_max: Annotated[int, typer.Option("--n-max", help="also compute angular distances d(l, n) for n = 1..K")] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the scores as JSON to this file")] = None,
    device: DeviceOpt = "auto",
    dtype: DtypeOpt = "auto",
    layers_path: LayersPathOpt = None,
    norm_path: NormPathOpt = None,
    unembed_path: UnembedPathOpt = None,
) -> None:
    """Score every decoder layer: ShortGPT block influence and angular distance on calibration text."""
    from layerprobe.models.loading import load_model
    from layerprobe.prune.calibration import traces_calibration
    from layerprobe.prune.scores import layer_scores

    check_calibration_flags(calib, calib_dataset, calib_traces, calib_docs, trace_tokens, seq_len, batch_size)
    if n_max < 1:
        raise UserError(f"--n-max {n_max}: must be at least 1")
    check_output_file(json_out, "--json")
    cal = None if calib_traces is not None else load_calibration_early(calib, calib_dataset, calib_docs)
    say = console(stderr=True)
    loaded = load_model(
        model, device=device, dtype=dtype, layers_path=layers_path, norm_path=norm_path, unembed_path=unembed_path
    )
    if n_max > loaded.n_layers:
        raise UserError(f"--n-max {n_max}: the model has only {loaded.n_layers} layers")
    if cal is None:
        assert calib_traces is not None  # cal is left None only for --calib-traces (traces need the model)
        say.print(f"generating {calib_traces} reasoning traces (up to {trace_tokens} tokens each) ...")
        cal = traces_calibration(loaded, calib_traces, trace_tokens)
    with say.status(f"scoring {loaded.n_layers} layers on {cal.n_docs} documents ...") as status:

        def progress(done: int, total: int) -> None:
            status.update(f"scoring {loaded.n_layers} layers: {done}/{total} documents")

        scores = layer_scores(loaded, cal, n_max=n_max, seq_len=seq_len, batch_size=batch_size, progress=progress)
    record = cal.record(seq_len)
    doc = influence_json(loaded, scores, record, n_max)

    table = Table(
        title=f"{loaded.name}: layer scores on {record['source']} text ({record['n_docs']} docs, {scores.n_tokens} tokens)"
    )
    table.add_column("layer", justify="right")
    table.add_column("BI", justify="right")
    table.add_column("d(l,1)", justify="right")
    for n in range(2, n_max + 1):
        table.add_column(f"d(l,{n})", justify="right")
    table.add_column("rank (BI)", justify="right")
    for entry in doc["layers"]:
        row = [str(entry["layer"]), f"{entry['block_influence']:.4f}", f"{entry['angular_distance']:.4f}"]
        for n in range(2, n_max + 1):
            v = entry.get("angular_distances", {}).get(str(n))
            row.append("" if v is None else f"{v:.4f}")
        row.append(str(entry["rank"]))
        table.add_row(*row)
    console().print(table)
    if json_out is not None:
        try:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(doc, indent=2) + "\n")
        except OSError as exc:
            raise UserError(f"--json {json_out}: cannot write it ({exc.strerror or exc})") from None
        say.print(f"wrote {json_out}")
