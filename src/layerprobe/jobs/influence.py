"""`layerprobe influence` as a job: per-layer block influence and angular distance on calibration text,
and the `--json` document (docs/definitions.md#influence-json)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layerprobe.errors import UserError
from layerprobe.jobs.calibration_settings import CalibrationSettings

INFLUENCE_SCHEMA_VERSION = 1


@dataclass
class InfluenceSettings:
    """Everything `layerprobe influence` was asked for."""

    model: str
    calibration: CalibrationSettings = field(default_factory=CalibrationSettings)
    n_max: int = 1
    """Also compute angular distances d(l, n) for n = 1..n_max."""
    json_out: Path | None = None
    """Write the scores as JSON to this file."""
    device: str = "auto"
    dtype: str = "auto"
    layers_path: str | None = None
    norm_path: str | None = None
    unembed_path: str | None = None

    def check(self) -> None:
        """Reject bad flags before any model is loaded (UserError, exit 2)."""
        from layerprobe._io import check_output_file

        self.calibration.check()
        if self.n_max < 1:
            raise UserError(f"--n-max {self.n_max}: must be at least 1")
        check_output_file(self.json_out, "--json")


@dataclass
class Influence:
    """The scores of one model: the model, its LayerScores, and the `--json` document."""

    loaded: Any
    scores: Any
    doc: dict[str, Any]


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


def score_influence(s: InfluenceSettings, say: Any) -> Influence:
    """Check the settings, load the model and the calibration text, and score every layer (what it does
    shown on `say`, a rich Console on stderr)."""
    from layerprobe.models.loading import load_model
    from layerprobe.prune.calibration import traces_calibration
    from layerprobe.prune.scores import layer_scores

    s.check()
    cs = s.calibration
    cal = None if cs.calib_traces is not None else cs.load_early()
    loaded = load_model(
        s.model, device=s.device, dtype=s.dtype, layers_path=s.layers_path, norm_path=s.norm_path, unembed_path=s.unembed_path
    )
    if s.n_max > loaded.n_layers:
        raise UserError(f"--n-max {s.n_max}: the model has only {loaded.n_layers} layers")
    if cal is None:
        assert cs.calib_traces is not None  # cal is left None only for --calib-traces (traces need the model)
        say.print(f"generating {cs.calib_traces} reasoning traces (up to {cs.trace_tokens} tokens each) ...")
        cal = traces_calibration(loaded, cs.calib_traces, cs.trace_tokens)
    with say.status(f"scoring {loaded.n_layers} layers on {cal.n_docs} documents ...") as status:

        def progress(done: int, total: int) -> None:
            status.update(f"scoring {loaded.n_layers} layers: {done}/{total} documents")

        scores = layer_scores(loaded, cal, n_max=s.n_max, seq_len=cs.seq_len, batch_size=cs.batch_size, progress=progress)
    doc = influence_json(loaded, scores, cal.record(cs.seq_len), s.n_max)
    return Influence(loaded, scores, doc)


def write_influence_json(doc: dict[str, Any], path: Path) -> None:
    """Write the `--json` document (UserError when the file cannot be written)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(doc, indent=2) + "\n")
    except OSError as exc:
        raise UserError(f"--json {path}: cannot write it ({exc.strerror or exc})") from None
