"""Probes as declarations (layerprobe.data.probes): a probe declared in THIS module only — the size of
each layer's update to the residual stream, ‖x_out − x_in‖₂ — is computed live and by prefill, stored
in the trace's layer file, averaged into layers/<variant>.json and shown in the report's layer table,
with no other file changed; the registry is as it was afterwards. And the built-in layout of a layer
file is unchanged (names, order, dtypes of schema_version 1).

To add a probe of your own, copy `UPDATE` and `update_norm` (docs/architecture.md, "Adding a probe")."""

from __future__ import annotations

import dataclasses
import html as htmllib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from layerprobe.data import load_run
from layerprobe.data.probes import Column, Probe, builtin_columns, columns, register_probe, registered_probe, unregister_probe
from layerprobe.data.schema import LayerAggregates, PerLayer
from layerprobe.errors import UserError
from layerprobe.probe.columns import StepInputs
from layerprobe.probe.layer_files import TraceLayers, load_trace_layers, save_trace_layers
from tests.probe_ref import lively_loaded

LABEL = "layer update ‖Δ‖"


def update_norm(inp: StepInputs) -> torch.Tensor:
    """(R, 1, L): ‖layer output − layer input‖₂ at each row's position."""
    x = inp.resid.float()  # (R, L+1, H)
    return torch.linalg.vector_norm(x[:, 1:] - x[:, :-1], dim=-1).unsqueeze(1)


UPDATE = Probe(
    "update",
    (Column("update_norm", "how far the layer moves the residual stream, ‖layer output − layer input‖₂", label=LABEL, fmt="f3"),),
    update_norm,
)


@pytest.fixture
def update_probe() -> Iterator[Probe]:
    with registered_probe(UPDATE) as probe:
        yield probe
    assert columns() == builtin_columns()  # nothing leaks into other tests


def _reference_update(loaded, prompt_ids: list[int], all_ids: list[int]) -> np.ndarray:
    """(T, L) float64 ‖h_l − h_{l−1}‖ from one plain forward pass with output_hidden_states: row n is the
    position that produced all_ids[n]; the last layer's raw output is the input of the final norm."""
    raw_last: list[torch.Tensor] = []
    handle = loaded.final_norm.register_forward_pre_hook(lambda _m, args: raw_last.append(args[0]))
    try:
        with torch.no_grad():
            out = loaded.model(input_ids=torch.tensor([prompt_ids + all_ids[:-1]]), output_hidden_states=True, use_cache=False)
    finally:
        handle.remove()
    hs = list(out.hidden_states)
    hs[-1] = raw_last[0]
    pos = torch.arange(len(prompt_ids) - 1, len(prompt_ids) - 1 + len(all_ids))
    x = torch.stack([h[0, pos] for h in hs]).double()  # (L+1, T, H)
    return (x[1:] - x[:-1]).norm(dim=-1).T.numpy()


def test_a_registered_probe_is_computed_live_and_by_prefill(update_probe: Probe, one_thread: None) -> None:
    from layerprobe.probe.hooks import capture
    from layerprobe.probe.prefill import prefill_trace_layers
    from layerprobe.scaling.engine import build_prompt
    from layerprobe.scaling.formats import FORMATS, Sampling

    loaded = lively_loaded("qwen3")
    text = build_prompt(loaded.tokenizer, FORMATS["think-tags"], "w12 w40 w77")
    prompt = loaded.tokenizer.encode(text, add_special_tokens=False)
    [(res, tl)] = capture(loaded, [text], fmt="think-tags", budget=8, sampling=Sampling(0.0), answer_max=3, chat=False)
    ref = _reference_update(loaded, list(prompt), list(res.all_ids))
    assert ref.shape == (len(res.all_ids), loaded.n_layers) and ref.max() > 1.0  # not a degenerate reference
    np.testing.assert_allclose(tl.stat("update_norm"), ref, rtol=1e-4, atol=1e-4 * ref.max())
    # the built-in columns are still there and first, the extra one after them
    assert tl.block_influence.shape == ref.shape and list(tl.extra) == ["update_norm"]
    pre = prefill_trace_layers(loaded, list(prompt), list(res.all_ids))
    np.testing.assert_allclose(pre.stat("update_norm"), ref, rtol=1e-4, atol=1e-4 * ref.max())


def test_a_registered_probe_is_stored_aggregated_and_rendered(update_probe: Probe, tmp_path: Path, one_thread: None) -> None:
    """`analyze` on the toy with the probe registered: every trace's layer file holds its column
    after the built-in ones, layers/<variant>.json its per-layer mean, the report a column of it."""
    from layerprobe.jobs.analyze import Analysis
    from layerprobe.jobs.plan import AnalyzeSettings
    from layerprobe.report import render_report
    from layerprobe.report.numbers import fmt

    s = AnalyzeSettings(drops=[[11]], budgets=[6], samples=2, limit=1, out=tmp_path / "run", report=False, teacher_forced=False)
    a = Analysis(s)
    a.run()
    run = load_run(a.out)
    for variant in ("base", "drop-11"):
        files = sorted((a.out / "layers" / variant).glob("*.npz"))
        assert files, variant
        sums, counts = 0.0, 0
        for f in files:
            with np.load(f) as z:
                names = list(z.files)
                upd = z["update_norm"].astype(np.float64)  # (T, L)
                n_layers = z["layers"].shape[0]
            assert names.index("update_norm") == names.index("rank") + 1, names
            assert upd.shape[1] == n_layers and np.isfinite(upd).all() and upd.min() >= 0 and upd.max() > 0
            sums, counts = sums + upd.sum(axis=0), counts + upd.shape[0]
        agg = LayerAggregates.model_validate_json((a.out / "layers" / f"{variant}.json").read_text())
        means = agg.per_layer.values("update_norm")
        assert len(means) == len(agg.layers)
        # float16 on disk: the files' means agree with the aggregate (computed from float32) to ~1e-3
        np.testing.assert_allclose(means, sums / counts, rtol=2e-3)
        assert run.layers[variant].per_layer.values("update_norm") == means
    html = render_report(a.out).read_text(encoding="utf-8")
    # the layer table: a column headed by the label in each variant, one cell per layer the variant
    # has, each the stored mean at its layer written as declared (f3), and the column's description
    assert html.count(f'<span class="muted">{LABEL}</span>') == 2
    assert f"<em>{LABEL}</em>: {UPDATE.columns[0].doc}." in html
    cells = re.findall(r'<span class="num" data-kind="f3" data-src="([^"]*update_norm[^"]*)">([^<]*)</span>', html)
    seen: dict[str, list[int]] = {}
    for src, text in cells:
        _, variant, _, _, i = json.loads(htmllib.unescape(src))
        means = run.layers[variant].per_layer.values("update_norm")
        assert text == fmt(means[i], "f3"), (variant, i, text)
        seen.setdefault(variant, []).append(i)
    assert {v: sorted(ix) for v, ix in seen.items()} == {v: list(range(len(run.layers[v].layers))) for v in ("base", "drop-11")}


def test_registration_is_checked_and_undone(tmp_path: Path) -> None:
    """Names are unique and plain; a built-in probe stays; after the block the extra column is gone,
    and a file written with it still loads without it (its built-in columns intact)."""
    T, L = 3, 2
    cols = {
        "block_influence": np.full((T, L), 0.25, np.float32),
        "norm": np.full((T, L), 7.0, np.float32),
        "jsd": np.zeros((T, L), np.float32),
        "entropy": np.ones((T, L), np.float32),
        "top1_agree": np.ones((T, L), np.float32),
        "rank": np.zeros((T, L), np.int32),
        "update_norm": np.full((T, L), 3.5, np.float32),
    }
    meta = {"key": "k", "layers": np.arange(L, dtype=np.int16), "tokens": np.arange(T, dtype=np.int32)}
    with registered_probe(UPDATE):
        with pytest.raises(UserError, match="already registered"):
            register_probe(UPDATE)
        with pytest.raises(UserError, match="already declared"):
            register_probe(Probe("other", (Column("norm", "again"),), update_norm))
        save_trace_layers(tmp_path / "t.npz", TraceLayers.from_columns(cols, **meta))
        assert load_trace_layers(tmp_path / "t.npz").stat("update_norm").tolist() == [[3.5, 3.5]] * T
    with pytest.raises(UserError, match="not a plain identifier"):
        register_probe(Probe("bad", (Column("a/b", "a path"),), update_norm))
    with pytest.raises(UserError, match="reserved"):
        register_probe(Probe("bad", (Column("tokens", "would overwrite the token ids"),), update_norm))
    with pytest.raises(UserError, match="built-in"):
        unregister_probe("lens")
    assert columns() == builtin_columns()
    tl = load_trace_layers(tmp_path / "t.npz")
    assert tl.extra == {} and not tl.has("update_norm") and tl.norm.tolist() == [[7.0, 7.0]] * T
    with pytest.raises(KeyError):
        tl.stat("update_norm")
    # the built-in declarations are the typed fields of the layer files' reader and of the aggregates
    fields = {f.name for f in dataclasses.fields(TraceLayers)}
    assert set(TraceLayers.COLUMNS) <= fields and len(TraceLayers.COLUMNS) == 6
    assert [c.aggregate for c in builtin_columns()] == list(PerLayer.model_fields)
    # an aggregate written with the extra column reads back with it, registered or not
    per = PerLayer.model_validate_json(json.dumps({"block_influence": [0.5], "update_norm": [2.0]}))
    assert per.values("update_norm") == [2.0] and per.values("missing") == []


def test_a_layer_file_keeps_the_schema_version_1_layout(tmp_path: Path) -> None:
    """The arrays of a layer file, their order and dtypes, as docs/probes.md lists them."""
    T, L = 4, 3
    f = lambda v: np.full((T, L), v, np.float32)
    tl = TraceLayers(
        key=7,
        layers=np.arange(L, dtype=np.int16),
        tokens=np.arange(T, dtype=np.int32),
        block_influence=f(0.1),
        norm=f(70000.0),  # overflows float16: norm is written as float32
        jsd=f(0.2),
        entropy=f(1.5),
        top1_agree=f(1.0),
        rank=np.full((T, L), 3, np.int32),
        n_layers_original=5,
    )
    save_trace_layers(tmp_path / "t.npz", tl)
    with np.load(tmp_path / "t.npz") as z:
        layout = [(k, z[k].dtype.str) for k in z.files]
    assert layout == [
        ("schema_version", "<i4"),
        ("kind", "<U12"),
        ("key", "<U1"),
        ("layers", "<i2"),
        ("n_layers_original", "<i4"),
        ("tokens", "<i4"),
        ("block_influence", "<f2"),
        ("norm", "<f4"),
        ("jsd", "<f2"),
        ("entropy", "<f2"),
        ("top1_agree", "<f2"),
        ("rank", "<i4"),
        ("lens", "<U4"),
        ("lens_every", "<i4"),
        ("lens_positions", "<i4"),
    ]
    tl.norm = f(5.0)
    save_trace_layers(tmp_path / "u.npz", tl)
    with np.load(tmp_path / "u.npz") as z:
        assert z["norm"].dtype == np.float16 and z["schema_version"] == 1


def test_the_probe_array_follows_the_declarations() -> None:
    """probe_rows on a made-up residual stream: built-in columns first, the extra one after them with
    the values of its own formula, lens columns only on the lens rows, and a probe returning the wrong
    shape named in the error."""
    from layerprobe.probe.columns import column_arrays, probe_rows

    g = torch.Generator().manual_seed(0)
    R, L, H, V = 3, 4, 8, 11
    resid = torch.randn(R, L + 1, H, generator=g)
    unembed = torch.nn.Linear(H, V, bias=False)
    inp = StepInputs(resid, torch.tensor([1, 5, 7]), torch.nn.Identity(), unembed)
    with registered_probe(UPDATE), torch.inference_mode():  # as the probe's callers run it
        arr = probe_rows(inp, [0, 2]).numpy()  # (R, 7, L)
        cols = column_arrays(arr)
    assert arr.shape == (R, 7, L) and list(cols) == [*TraceLayers.COLUMNS, "update_norm"]
    expect = np.linalg.norm(resid[:, 1:].numpy() - resid[:, :-1].numpy(), axis=-1)
    np.testing.assert_allclose(cols["update_norm"], expect, rtol=1e-6)
    assert np.isnan(cols["jsd"][1]).all() and (cols["rank"][1] == -1).all()
    assert np.isfinite(cols["jsd"][[0, 2]]).all() and (cols["jsd"][[0, 2], -1] == 0).all()
    bad = Probe("bad", (Column("bad_col", "two columns declared, one returned"), Column("bad_col2", "")), update_norm)
    with registered_probe(bad), pytest.raises(ValueError, match="probe 'bad' returned shape"):
        probe_rows(inp, None)
