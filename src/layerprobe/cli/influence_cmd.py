"""`layerprobe influence`: per-layer block influence and angular distance on calibration text."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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
    console,
)


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
    from layerprobe.jobs.calibration_settings import CalibrationSettings
    from layerprobe.jobs.influence import InfluenceSettings, score_influence, write_influence_json

    settings = InfluenceSettings(
        model=model,
        calibration=CalibrationSettings(calib, calib_dataset, calib_traces, calib_docs, trace_tokens, seq_len, batch_size),
        n_max=n_max,
        json_out=json_out,
        device=device,
        dtype=dtype,
        layers_path=layers_path,
        norm_path=norm_path,
        unembed_path=unembed_path,
    )
    say = console(stderr=True)
    result = score_influence(settings, say)
    loaded, scores, doc = result.loaded, result.scores, result.doc
    record = doc["calibration"]

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
        write_influence_json(doc, json_out)
        say.print(f"wrote {json_out}")
