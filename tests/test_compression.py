"""Compression beyond whole layers (#36): Wanda, magnitude, N:M, width and trace-kl against direct
computations written here from their definitions; sizes counted on the saved tensors; checkpoints that
plain `from_pretrained` loads; bad input in one line; the matched-size analysis and its report section."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from layerprobe.errors import UserError
from layerprobe.prune.calibration import Calibration
from layerprobe.prune.methods import prune_model
from layerprobe.prune.size import SizeRequest
from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import tiny_loaded

pytestmark = pytest.mark.usefixtures("one_thread")

#: Calibration documents of different lengths (right padding is exercised), token ids of the tiny vocabulary.
DOCS = [[(7 * i + 3 * j) % 120 + 6 for j in range(n)] for i, n in enumerate([12, 5, 9, 16])]


def _linears(hf: nn.Module) -> list[tuple[int, str, nn.Linear]]:
    return [
        (i, name, m) for i, layer in enumerate(hf.model.layers) for name, m in layer.named_modules() if isinstance(m, nn.Linear)
    ]


def _reference_sparse(
    hf: nn.Module, fraction: float | None, nm: tuple[int, int] | None, use_acts: bool, sequential: bool = True
) -> dict:
    """Masks from the definitions, written out: per layer in order, the activations entering each linear
    of that layer (batch of one document, every token), |W_ij| · ‖X_j‖₂ (or |W_ij|), per output row the
    lowest-scoring weights zeroed (unstructured: round(F·out·in) per matrix, ⌊·/out⌋ per row and one more
    for the first rows; N:M: the M−N lowest of each block of M); then the next layer sees this one pruned."""
    model = copy.deepcopy(hf)
    masks = {}
    for i, layer in enumerate(model.model.layers):
        lin = {n: m for n, m in layer.named_modules() if isinstance(m, nn.Linear)}
        sq = {n: np.zeros(m.weight.shape[1]) for n, m in lin.items()}
        handles = [
            m.register_forward_pre_hook(
                lambda _m, args, n=n, sq=sq: sq.__setitem__(n, sq[n] + (args[0][0].double() ** 2).sum(0).numpy())
            )
            for n, m in lin.items()
        ]
        if use_acts:
            with torch.no_grad():
                for doc in DOCS:
                    model(input_ids=torch.tensor([doc]))
        for h in handles:
            h.remove()
        for n, m in lin.items():
            w = m.weight.detach().double().numpy()
            score = np.abs(w) * (np.sqrt(sq[n])[None, :] if use_acts else 1.0)
            drop = np.zeros_like(w, dtype=bool)
            out_f, in_f = w.shape
            if nm is None:
                total = int(fraction * out_f * in_f + 0.5)
                for r in range(out_f):
                    k = total // out_f + (1 if r < total % out_f else 0)
                    drop[r, np.argsort(score[r], kind="stable")[:k]] = True
            else:
                keep_n, block = nm
                for r in range(out_f):
                    for b0 in range(0, in_f, block):
                        drop[r, b0 + np.argsort(score[r, b0 : b0 + block], kind="stable")[: block - keep_n]] = True
            masks[(i, n)] = drop
        if sequential:
            for n, m in lin.items():
                with torch.no_grad():
                    m.weight[torch.from_numpy(masks[(i, n)])] = 0.0
    return masks


def _zero_masks(loaded) -> dict:
    return {(i, n): (m.weight.detach() == 0).numpy() for i, n, m in _linears(loaded.model)}


def test_wanda_mask_equals_the_definition():
    base = tiny_loaded("qwen3")
    pruned, sel = prune_model(base, "wanda", calibration=DOCS, size=SizeRequest(sparsity=0.3))
    want = _reference_sparse(base.model, 0.3, None, use_acts=True)
    got = _zero_masks(pruned)
    assert got.keys() == want.keys()
    for key in want:
        assert np.array_equal(got[key], want[key]), key
    # later layers' statistics were taken with the layers below already pruned: the one-pass (dense)
    # computation gives other masks, so the comparison above tells the two apart
    dense = _reference_sparse(base.model, 0.3, None, use_acts=True, sequential=False)
    assert any(not np.array_equal(dense[k], want[k]) for k in want)
    assert all(np.array_equal(dense[k], want[k]) for k in want if k[0] == 0)
    assert base.model.model.layers[0].mlp.down_proj.weight.count_nonzero() == 64 * 128  # the input model is untouched
    assert sel.record["score"] == "wanda" and sel.record["compared_within"] == "output row"


def test_magnitude_and_2_4_equal_the_definition():
    base = tiny_loaded("llama")
    mag, _ = prune_model(base, "magnitude", size=SizeRequest(match_layers=1))
    want = _reference_sparse(base.model, 1 / 6, None, use_acts=False)
    got = _zero_masks(mag)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    nm, _ = prune_model(base, "nm", calibration=DOCS, size=SizeRequest(nm=(2, 4)))
    want = _reference_sparse(base.model, None, (2, 4), use_acts=True)
    got = _zero_masks(nm)
    assert all(np.array_equal(got[k], want[k]) for k in want)
    for _i, _n, m in _linears(nm.model):  # 2:4: every block of 4 inputs of a row keeps exactly 2
        assert (m.weight.detach().reshape(m.weight.shape[0], -1, 4) != 0).sum(-1).eq(2).all()


def test_width_removes_the_lowest_scored_channels_exactly():
    base = tiny_loaded("qwen3")
    pruned, sel = prune_model(base, "width", calibration=DOCS, size=SizeRequest(match_layers=1))
    c = sel.record["channels_removed_per_layer"]
    # 1 layer's worth of 6: (1/6) * 6 layers * 36,864 / (3 * 64 weights per channel) = 32 channels per layer
    assert c == 32 and pruned.model.config.intermediate_size == 128 - 32
    assert {layer.mlp.down_proj.weight.shape[1] for layer in pruned.model.model.layers} == {96}
    # the scores, written out: mean |input of down_proj| (dense model, every token) x column norm of down_proj
    acts: dict = {}
    model = base.model
    hooks = [
        layer.mlp.down_proj.register_forward_pre_hook(
            lambda _m, a, i=i: acts.__setitem__(i, acts.get(i, []) + [a[0][0].abs().double()])
        )
        for i, layer in enumerate(model.model.layers)
    ]
    with torch.no_grad():
        for doc in DOCS:
            model(input_ids=torch.tensor([doc]))
    for h in hooks:
        h.remove()
    for i, layer in enumerate(model.model.layers):
        score = torch.cat(acts[i]).mean(0) * layer.mlp.down_proj.weight.detach().double().norm(dim=0)
        lowest = sorted(np.argsort(score.numpy(), kind="stable")[:c].tolist())
        assert sel.record["removed_channels"][i] == lowest
    # removing a channel is the same as switching it off: the original model with those columns zeroed
    ref = copy.deepcopy(base.model)
    with torch.no_grad():
        for i, layer in enumerate(ref.model.layers):
            layer.mlp.down_proj.weight[:, sel.record["removed_channels"][i]] = 0.0
    ids = torch.tensor([DOCS[3]])
    with torch.no_grad():
        assert torch.allclose(pruned.model(input_ids=ids).logits, ref(input_ids=ids).logits, atol=1e-5)
    assert base.model.config.intermediate_size == 128  # the input model is untouched


def _kl_reference(base_model, cand_model, docs, starts) -> float:
    vals = []
    for doc, p in zip(docs, starts):
        ids = torch.tensor([doc])
        with torch.no_grad():
            lp_a = torch.log_softmax(base_model(input_ids=ids).logits[0].double(), -1)
            lp_b = torch.log_softmax(cand_model(input_ids=ids).logits[0].double(), -1)
        kl = (lp_a.exp() * (lp_a - lp_b)).sum(-1)
        vals.append(float(kl[p - 1 : len(doc) - 1].mean()))
    return sum(vals) / len(vals)


def _without(hf, layers: list[int]):
    m = copy.deepcopy(hf)
    keep = [i for i in range(len(m.model.layers)) if i not in layers]
    m.model.layers = nn.ModuleList(m.model.layers[i] for i in keep)
    for j, layer in enumerate(m.model.layers):
        layer.self_attn.layer_idx = j
    m.config.num_hidden_layers = len(keep)
    m.config.layer_types = [m.config.layer_types[i] for i in keep]
    return m


def test_trace_kl_greedy_rounds_equal_a_direct_computation():
    base = tiny_loaded("qwen3")
    starts = [4, 2, 3, 6]
    cal = Calibration(texts=["t"] * 4, source="traces", token_ids=DOCS, add_special_tokens=False, prompt_lengths=starts)
    pruned, sel = prune_model(base, "trace-kl", calibration=cal, size=SizeRequest(match_layers=2))
    rounds = sel.record["rounds"]
    first = {c: _kl_reference(base.model, _without(base.model, [c]), DOCS, starts) for c in range(6)}
    assert rounds[0]["kl"].keys() == first.keys()
    for c in first:
        assert math.isclose(rounds[0]["kl"][c], first[c], rel_tol=1e-4, abs_tol=1e-7)
    chosen = min(first, key=lambda c: (first[c], c))
    assert rounds[0]["chosen"] == chosen
    second = {c: _kl_reference(base.model, _without(base.model, [chosen, c]), DOCS, starts) for c in range(6) if c != chosen}
    assert rounds[1]["chosen"] == min(second, key=lambda c: (second[c], c))  # re-scored with the first removal in place
    assert sorted(pruned.dropped) == sorted([chosen, rounds[1]["chosen"]])
    with pytest.raises(UserError, match="own reasoning traces"):
        prune_model(base, "trace-kl", calibration=DOCS, size=SizeRequest(match_layers=1))


def _count(directory: Path) -> tuple[int, int]:
    """(linear weights, non-zero linear weights) of a saved checkpoint's decoder layers, from its tensors."""
    tensors = load_file(str(directory / "model.safetensors"))
    names = [k for k in tensors if k.startswith("model.layers.") and k.endswith("_proj.weight")]
    return sum(tensors[k].numel() for k in names), sum(int(tensors[k].count_nonzero()) for k in names)


@pytest.mark.parametrize(
    ("method", "size"),
    [
        ("wanda", ["--match-layers", "2"]),
        ("magnitude", ["--sparsity", "0.2"]),
        ("nm", ["--nm", "2:4"]),
        ("width", ["--match-layers", "1"]),
        ("trace-kl", ["--match-layers", "1", "--calib-traces", "2", "--trace-tokens", "6"]),
    ],
)
def test_prune_saves_a_plain_checkpoint_whose_size_is_its_tensors(capsys, tiny_checkpoint_dir, tmp_path, method, size):
    cal = tmp_path / "cal.txt"
    cal.write_text("\n".join(" ".join(f"w{t}" for t in d) for d in DOCS) + "\n")
    out = tmp_path / method
    calib = [] if method == "trace-kl" else ["--calib", str(cal)]
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), "--method", method, *size, *calib, "--out", str(out))
    assert r.code == 0, r.err
    prov = json.loads((out / "layerprobe.json").read_text())
    rec = prov["compression"]["size"]
    total, nonzero = _count(out)
    base_total, base_nonzero = _count(tiny_checkpoint_dir)
    assert (rec["linear_weights"], rec["nonzero_linear_weights"], rec["linear_weights_base"]) == (total, nonzero, base_total)
    assert rec["kept_fraction"] == pytest.approx(nonzero / base_total)
    assert rec["layers_removed_equivalent"] == pytest.approx((base_total - nonzero) / (base_total / 6))
    assert rec["tokens_per_s"] > 0 and rec["tokens_per_s_base"] > 0 and "CPU" in rec["speed_note"]
    kind = {"wanda": "unstructured", "magnitude": "unstructured", "nm": "semi-structured", "width": "width"}.get(method, "depth")
    assert prov["compression"]["kind"] == kind and prov["method"] == method
    expected_removed = {"wanda": 2 / 6, "magnitude": 0.2, "nm": 0.5, "width": 1 / 6, "trace-kl": 1 / 6}[method]
    assert 1 - nonzero / base_total == pytest.approx(expected_removed, abs=0.005)
    model = AutoModelForCausalLM.from_pretrained(out)  # plain transformers, layerprobe.json ignored
    assert (
        sum(int(p.count_nonzero()) for n, p in model.named_parameters() if "layers" in n and n.endswith("_proj.weight"))
        == nonzero
    )
    from layerprobe import load_model

    again = load_model(str(out))
    assert again.compression_kind == kind and again.method == method
    assert again.layer_map == (list(range(6)) if kind != "depth" else [i for i in range(6) if i not in prov["dropped"]])


def test_width_needs_a_plain_gated_mlp():
    loaded = tiny_loaded("qwen3")
    model = copy.deepcopy(loaded.model)
    model.model.layers[2].mlp = nn.Sequential(nn.Linear(64, 64))
    odd = copy.copy(loaded)
    odd.model = model
    with pytest.raises(UserError, match="plain gated MLP"):
        prune_model(odd, "width", calibration=DOCS, size=SizeRequest(match_layers=1))


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--method", "wanda", "--sparsity", "1.5"], ["--sparsity 1.5", "strictly between 0 and 1"]),
        (["--method", "wanda", "--match-layers", "0"], ["--match-layers 0", "at least 1"]),
        (["--method", "wanda", "--match-layers", "6"], ["--match-layers 6", "at most 5"]),
        (["--method", "nm", "--nm", "5:4"], ["--nm 5:4", "smaller than M"]),
        (["--method", "nm", "--sparsity", "0.5"], ["--method nm", "--nm N:M"]),
        (["--method", "laco", "--match-layers", "2"], ["--method laco", "takes no size"]),
        (["--method", "wanda", "--n-drop", "2"], ["--n-drop counts whole layers", "--match-layers"]),
        (["--method", "wanda"], ["--method wanda needs a size"]),
        (["--method", "shortgpt", "--n-drop", "2", "--match-layers", "2"], ["exclusive"]),
        (["--drop", "1", "--sparsity", "0.2"], ["only with --method"]),
        (["--method", "width", "--sparsity", "0.9"], ["FFN channels only", "at most"]),
        (["--method", "trace-kl", "--match-layers", "1", "--calib-dataset", "x"], ["own reasoning traces", "--calib-traces"]),
    ],
)
def test_prune_bad_sizes_are_one_line(capsys, tiny_checkpoint_dir, tmp_path, args, fragments):
    r = run_cli(capsys, "prune", "--model", str(tiny_checkpoint_dir), *args, "--out", str(tmp_path / "o"))
    assert_one_line_error(r, *fragments)
    assert not (tmp_path / "o" / "layerprobe.json").exists()


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        (["--method", "wanda", "--sparsity", "1.5"], ["--sparsity 1.5"]),
        (["--method", "wanda", "--match-layers", "0"], ["--match-layers 0"]),
        (["--method", "wanda", "--nm", "2:4"], ["--nm", "--method nm"]),
        (["--method", "wanda", "--n-drop", "2"], ["--n-drop counts whole layers"]),
        (["--method", "laco", "--match-layers", "1"], ["takes no size"]),
        (["--method", "width", "--match-layers", "1", "--workers", "1"], ["changes weights", "--workers"]),
        (["--drop", "3", "--match-layers", "1"], ["--method"]),
    ],
)
def test_analyze_bad_sizes_are_one_line(capsys, tmp_path, args, fragments):
    assert_one_line_error(run_cli(capsys, "analyze", *args, "--out", str(tmp_path / "run")), *fragments)


def test_heal_and_ingest_refuse_weight_methods_in_one_line(capsys, tmp_path):
    r = run_cli(capsys, "heal", "--model", "toy", "--method", "wanda", "--n-drop", "2", "--out", str(tmp_path / "h"))
    assert_one_line_error(r, "prune first", "--model DIR")
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"id": "p1", "prompt": "a3 b4 =", "completion": "7"}) + "\n")
    r = run_cli(capsys, "ingest", str(f), "--model", "toy", "--method", "width", "--out", str(tmp_path / "i"))
    assert_one_line_error(r, "prune first")


def test_healing_a_sparse_checkpoint_says_whether_the_zeros_survive(capsys, tiny_checkpoint_dir, tmp_path):
    pytest.importorskip("peft")
    sparse = tmp_path / "sparse"
    assert (
        run_cli(
            capsys,
            "prune",
            "--model",
            str(tiny_checkpoint_dir),
            "--method",
            "magnitude",
            "--sparsity",
            "0.3",
            "--out",
            str(sparse),
        ).code
        == 0
    )
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "w1 w2", "completion": f"w{i} w{i + 1}"}) + "\n" for i in range(6, 12)))
    out = tmp_path / "healed"
    r = run_cli(
        capsys,
        "heal",
        "--model",
        str(sparse),
        "--how",
        "lora",
        "--steps",
        "2",
        "--lr",
        "0.05",
        "--data",
        str(data),
        "--out",
        str(out),
    )
    assert r.code == 0, r.err
    total, nonzero = _count(out)
    zeros = json.loads((out / "layerprobe.json").read_text())["healing"]["zeros"]
    assert zeros == {"before": _count(sparse)[0] - _count(sparse)[1], "after": total - nonzero, "linear_weights": total}
    assert zeros["after"] < zeros["before"]  # a merged LoRA update fills the zeros of the layers it adapts
    assert "do not survive" in r.err
    size = json.loads((out / "layerprobe.json").read_text())["compression"]["size"]
    assert size["nonzero_linear_weights"] == nonzero and size["counted"] == "after healing"


@pytest.fixture(scope="module")
def toy_magnitude(tmp_path_factory) -> Path:
    """A magnitude-pruned checkpoint of the toy (reads no text: quick)."""
    from layerprobe.cli.app import main

    out = tmp_path_factory.mktemp("mag") / "toy-magnitude"
    try:
        main(["prune", "--model", "toy", "--method", "magnitude", "--sparsity", "0.1", "--out", str(out)])
    except SystemExit as exc:
        assert exc.code in (0, None)
    return out


def test_ingest_names_a_compressed_checkpoints_traces_after_its_method(capsys, tmp_path, toy_magnitude):
    from layerprobe.data.reader import load_run

    f = tmp_path / "t.jsonl"
    f.write_text(
        json.dumps({"id": "p1", "prompt": "<q> x = 3 s1 +4 </q>", "completion": "<think> s1 3 +4 = 7 </think> \\boxed{ 7 }"})
        + "\n"
    )
    out = tmp_path / "run"
    r = run_cli(
        capsys,
        "ingest",
        str(f),
        "--model",
        str(toy_magnitude),
        "--no-probes",
        "--answer-type",
        "digit",
        "--no-report",
        "--out",
        str(out),
    )
    assert r.code == 0, r.err
    (spec,) = load_run(out).variants
    assert spec.name == "magnitude" and spec.dropped == [] and spec.compression.kind == "unstructured"
    assert spec.compression.size.kept_fraction == pytest.approx(0.9, abs=1e-4)


def test_matched_size_analysis_and_its_report_section(capsys, tmp_path, toy_magnitude):
    from layerprobe.data.reader import load_run
    from layerprobe.report.narrative import resolve

    out = tmp_path / "run"
    r = run_cli(
        capsys,
        "analyze",
        "--method", "shortgpt", "--method", "width", "--method", "wanda", "--method", "nm",
        "--match-layers", "1",
        "--calib-traces", "4", "--limit", "1", "--budgets", "8,32", "--samples", "2", "--explain",
        "--variant", f"mag={toy_magnitude}", "--out", str(out),
    )  # fmt: skip
    assert r.code == 0, r.err
    run = load_run(out)
    assert [v.name for v in run.variants] == ["base", "shortgpt-1", "width-1", "wanda-1", "nm-2of4", "mag"]
    assert run.spec("mag").compression.kind == "unstructured" and run.spec("mag").checkpoint == str(toy_magnitude)
    sizes = {v.name: v.compression.size for v in run.variants[1:]}
    assert sizes["shortgpt-1"].layers_removed_equivalent == pytest.approx(1.0)
    assert sizes["width-1"].layers_removed_equivalent == pytest.approx(1.0, abs=0.02)
    assert sizes["wanda-1"].layers_removed_equivalent == pytest.approx(1.0, abs=0.001)
    assert sizes["nm-2of4"].kept_fraction == pytest.approx(0.5)
    assert all(s.tokens_per_s for s in sizes.values())
    cf = run.extras["compression.json"]
    rows = {row.variant: row for row in cf.rows}
    assert rows["width-1"].reference == "shortgpt-1" and rows["nm-2of4"].reference is None
    assert rows["wanda-1"].restoration_applies is False and rows["shortgpt-1"].restoration_applies is True
    ex = run.extras["explain.json"]
    assert any("width-1" in s and "does not apply" in s for s in ex.skipped)
    assert any("mag" in s and "does not apply" in s for s in ex.skipped)
    # the paired difference against ShortGPT, recomputed here from the samples
    top = max(cf.budgets)
    for name in ("width-1", "wanda-1"):
        for g, c in rows[name].vs_reference.items():
            mine = {
                s.problem_id: float(s.correct)
                for s in run.samples
                if s.variant == name and s.group == g and s.mode == "sequential" and s.budget == top
            }
            ref = {
                s.problem_id: float(s.correct)
                for s in run.samples
                if s.variant == "shortgpt-1" and s.group == g and s.mode == "sequential" and s.budget == top
            }
            assert c.diff == pytest.approx(np.mean([mine[p] - ref[p] for p in mine]))
    html = (out / "report.html").read_text()
    assert 'id="r0-compression"' in html and "Which compression keeps long chains" in html
    import re

    from layerprobe.report.numbers import fmt

    shown = re.findall(r'<span class="num" data-kind="([^"]+)" data-src="([^"]+)">([^<]*)</span>', html)
    mine = [(k, json.loads(src.replace("&#34;", '"')), text) for k, src, text in shown if "compression.json" in src]
    assert len(mine) > 20, "the section's numbers carry their source"
    for kind, path, text in mine:  # every number shown is the stored value it names, formatted
        assert fmt(resolve(run, path), kind) == text, (path, text)


@pytest.mark.slow
def test_smollm2_every_method_prunes_reloads_and_runs_through_analyze(capsys, tmp_path, smollm2):
    """smollm2-135m: each kind prunes, saves a checkpoint plain transformers loads, whose recorded size is
    its tensors, and every checkpoint (and one method built in the run) goes through analyze end to end.
    No claim about reasoning: the 135M model solves about 1 arithmetic problem in 10."""
    from layerprobe.data.reader import load_run
    from layerprobe.prune.calibration import traces_calibration
    from layerprobe.prune.surgery import save_model

    docs = ["A shop sells pencils at 3 for 45 cents. How much do 14 pencils cost?", "The river rose after a week of rain."]
    traces = traces_calibration(smollm2, 2, 8)
    dirs = {}
    for method, size, cal in [
        ("wanda", SizeRequest(match_layers=2), docs),
        ("magnitude", SizeRequest(sparsity=0.1), None),
        ("nm", SizeRequest(nm=(2, 4)), docs),
        ("width", SizeRequest(match_layers=2), docs),
        ("trace-kl", SizeRequest(match_layers=1), traces),
    ]:
        pruned, sel = prune_model(smollm2, method, calibration=cal, size=size, seq_len=32 if method != "trace-kl" else 256)
        out = save_model(pruned, tmp_path / method, selection=sel.to_json())
        rec = json.loads((out / "layerprobe.json").read_text())["compression"]["size"]
        total, nonzero = _count(out)
        assert (rec["linear_weights"], rec["nonzero_linear_weights"]) == (total, nonzero)
        AutoModelForCausalLM.from_pretrained(out)  # plain transformers
        dirs[method] = out
    assert json.loads((dirs["width"] / "config.json").read_text())["intermediate_size"] < 1536
    cal_file = tmp_path / "cal.txt"
    cal_file.write_text("\n".join(docs) + "\n")
    run_dir = tmp_path / "run"
    variants = [x for m, d in dirs.items() for x in ("--variant", f"{m}={d}")]
    r = run_cli(
        capsys,
        "analyze", "--model", "smollm2-135m", "--format", "s1", "--task", "arith", "--limit", "1",
        "--budgets", "8", "--answer-max", "8", "--samples", "1", "--method", "width", "--match-layers", "1",
        "--calib", str(cal_file), *variants, "--no-report", "--out", str(run_dir),
    )  # fmt: skip
    assert r.code == 0, r.err
    run = load_run(run_dir)
    assert run.status == "complete"
    names = [v.name for v in run.variants]
    assert names == ["base", "width-1", "wanda", "magnitude", "nm", "width", "trace-kl"]
    kinds = {v.name: v.compression.kind for v in run.variants[1:]}
    assert kinds == {
        "width-1": "width",
        "wanda": "unstructured",
        "magnitude": "unstructured",
        "nm": "semi-structured",
        "width": "width",
        "trace-kl": "depth",
    }
    cf = run.extras["compression.json"]
    assert [row.variant for row in cf.rows] == names
    assert all(run.layers[n] is not None for n in names)  # probes ran for every kind


def test_off_program_steps_follow_the_prompts_chain():
    from layerprobe.jobs.compression import off_program_steps

    q = "<q> x = 7 s1 +5 s2 *3 s3 -2 </q>"
    assert off_program_steps("s1 7 +5 = 2 s2 2 *3 = 6 s3 6 -2 = 4", q) == 0
    assert off_program_steps("s1 7 +5 = 2 s2 2 -2 = 0 s3 0 -2 = 8", q) == 1  # another operation at step 2
    assert off_program_steps("s1 7 +5 = 2 s3 2 -2 = 0", q) == 1  # step 2 written as s3
    assert off_program_steps("s1 7 +5 = 3 s2 2 *3 = 6", q) == 1  # step 2 does not start from the result written
    assert off_program_steps("s1 7 +5 = 3 Wait , 7 +5 = 2 s2 2 *3 = 6", q) == 0  # a corrected step counts as corrected
    assert off_program_steps("s1 7 +5 = 2 s2 2 *3 = 6 s3 6 -2 = 4 s4 4 +1 = 5", q) == 1  # a step the prompt has not
