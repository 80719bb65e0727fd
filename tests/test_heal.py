"""`layerprobe heal` and `analyze --variant`: LoRA merges exactly, distillation and fine-tuning reduce
their losses on data they did not see / did see, resume continues a stopped run, healed checkpoints
load with plain transformers and show up labelled in a run's report, and bad input exits 2."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest
import torch

from layerprobe.prune.heal import (
    Example,
    HealConfig,
    HealStopped,
    base_traces,
    completion_loss,
    heal,
    merged,
    trainable_copy,
)
from layerprobe.prune.surgery import drop_layers
from layerprobe.scaling.formats import get_format
from tests.cli_utils import assert_one_line_error, run_cli
from tests.helpers import WORDS, make_tiny_checkpoint, tiny_loaded

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_examples(n: int = 12, seed: int = 0) -> list[Example]:
    """Word sequences of the tiny tokenizer: a prompt and a completion of a few words each."""
    rng = random.Random(seed)
    words = WORDS[6:]
    return [
        Example(
            " ".join(rng.choice(words) for _ in range(5)) + " <think>", " ".join(rng.choice(words) for _ in range(6)), eos=True
        )
        for _ in range(n)
    ]


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits.float()


IDS = torch.tensor([[7, 20, 33, 41, 52, 63, 77, 90, 101, 4, 12, 19]])


# ------------------------------------------------------------------------------- library


def test_lora_merges_into_the_weights_and_the_checkpoint_reloads_exactly(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from layerprobe.prune.surgery import save_model

    base = tiny_loaded("qwen3")
    pruned = drop_layers(base, [4, 5])
    cfg = HealConfig(how="lora", steps=6, lr=5e-2, batch_size=4, rank=4, alpha=8, save_every=1)
    calls = iter(range(100))
    with pytest.raises(HealStopped):  # stop before step 5: the state holds the adapters after 4 steps
        heal(pruned, _tiny_examples(), cfg, state_dir=tmp_path / "state", should_stop=lambda: next(calls) >= 4)
    state = torch.load(tmp_path / "state" / "state.pt", weights_only=False)
    assert state["step"] == 4
    adapter = trainable_copy(pruned, cfg)
    params = dict(adapter.named_parameters())
    assert set(state["trainable"]) == {n for n, p in params.items() if p.requires_grad}
    assert all("lora_" in n for n in state["trainable"])
    with torch.no_grad():
        for n, v in state["trainable"].items():
            params[n].copy_(v)
    with_adapters = _logits(adapter, IDS)
    plain = _logits(pruned.model, IDS)
    effect = (with_adapters - plain).abs().max().item()
    assert effect > 1e-2  # the trained adapters change the outputs: the comparison below is not vacuous
    merged_model = merged(adapter, cfg)
    assert not any("lora" in n for n, _ in merged_model.named_modules())
    assert type(merged_model) is type(pruned.model)
    diff = (_logits(merged_model, IDS) - with_adapters).abs().max().item()
    # Merging replaces x W^T + s (x A^T) B^T by x (W + s B A)^T: the same sums in another order. In
    # float32 (eps 1.2e-7) with 64-wide products over 4 layers the reordering moves logits of size
    # ~|logits| by a few eps each; 1e-5 relative to the largest logit bounds that with room, and is
    # still three orders of magnitude below what the adapters change.
    scale = with_adapters.abs().max().item()
    assert diff <= 1e-5 * scale, (diff, scale)

    # the finished run (resumed from the saved state) saves a checkpoint that plain transformers loads
    res = heal(pruned, _tiny_examples(), cfg, state_dir=tmp_path / "state")
    assert res.resumed_from == 4
    out = save_model(res.loaded, tmp_path / "ckpt", healing=res.record)
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert reloaded.config.num_hidden_layers == 4
    assert torch.equal(_logits(reloaded, IDS), _logits(res.loaded.model, IDS))
    prov = json.loads((out / "layerprobe.json").read_text())
    assert prov["dropped"] == [4, 5] and prov["healing"]["how"] == "lora" and prov["healing"]["steps"] == 6
    # healing never touched the model it was given (whose layers are the base model's)
    assert torch.equal(_logits(pruned.model, IDS), plain)


def test_resume_continues_to_the_same_weights_as_an_uninterrupted_run(tmp_path: Path) -> None:
    pruned = drop_layers(tiny_loaded("llama"), [1])
    cfg = HealConfig(how="full", steps=6, lr=1e-3, batch_size=3, grad_accum=2, save_every=1)
    straight = heal(pruned, _tiny_examples(), cfg)
    calls = iter(range(100))
    with pytest.raises(HealStopped) as stopped:
        heal(pruned, _tiny_examples(), cfg, state_dir=tmp_path, should_stop=lambda: next(calls) >= 3)
    assert stopped.value.step == 3
    resumed = heal(pruned, _tiny_examples(), cfg, state_dir=tmp_path)
    assert resumed.resumed_from == 3
    assert resumed.losses[:3] == straight.losses[:3] and len(resumed.losses) == 6
    a, b = straight.loaded.model.state_dict(), resumed.loaded.model.state_dict()
    assert all(torch.allclose(a[k], b[k], rtol=0, atol=1e-6) for k in a)
    assert resumed.record["tokens_seen"] == straight.record["tokens_seen"]
    # a state saved by other settings is not resumed
    from layerprobe.errors import UserError

    other = HealConfig(how="full", steps=6, lr=2e-3, batch_size=3, grad_accum=2, save_every=1)
    calls = iter(range(100))
    with pytest.raises(HealStopped):
        heal(pruned, _tiny_examples(), cfg, state_dir=tmp_path / "x", should_stop=lambda: next(calls) >= 2)
    with pytest.raises(UserError, match="different healing run"):
        heal(pruned, _tiny_examples(), other, state_dir=tmp_path / "x")


def test_full_fine_tuning_lowers_the_completion_loss_and_leaves_the_base_alone() -> None:
    base = tiny_loaded("qwen2")
    pruned = drop_layers(base, [2, 3])
    data = _tiny_examples(8)
    before = completion_loss(pruned, data)
    base_before = _logits(base.model, IDS)
    res = heal(pruned, data, HealConfig(how="full", steps=25, lr=3e-3, batch_size=4))
    after = completion_loss(res.loaded, data)
    assert after < 0.8 * before, (before, after)
    assert torch.equal(_logits(base.model, IDS), base_before)  # the pruned model shared these weights
    assert res.record["params"] == "full" and res.record["loss"] == "nll"
    assert res.record["tokens_seen"] > 0 and res.record["completion_tokens_seen"] < res.record["tokens_seen"]


def test_distillation_lowers_the_kl_to_the_base_on_held_out_traces() -> None:
    from layerprobe.models.loading import load_model
    from layerprobe.toy.tasks import sample_problems

    base = load_model("toy", device="cpu")
    problems = [(p.id, p.prompt) for t in ("long", "short") for p in sample_problems(t, 20, seed=0, split="train")]
    traces = base_traces(base, problems, get_format("think-tags"), budget=128, answer_max=8, seed=0, batch_size=64)
    assert all("</think>" in t.completion for t in traces)
    train = traces[:15] + traces[20:35]  # long and short chains in both halves
    held_out = traces[15:20] + traces[35:40]
    pruned = drop_layers(base, [10, 11])
    before = completion_loss(pruned, held_out, teacher=base)
    assert before > 0.05  # the two layers matter: there is something to recover
    res = heal(pruned, train, HealConfig(how="distill", steps=15, lr=1e-3, batch_size=8, rank=8, alpha=16), teacher=base)
    after = completion_loss(res.loaded, held_out, teacher=base)
    assert after < 0.75 * before, (before, after)
    assert res.record["loss"] == "kl" and res.record["params"] == "lora"


def test_a_diverging_loss_stops_healing_with_a_message() -> None:
    """A loss that is not finite (here: a weight set to NaN, as a too-high learning rate would leave it)
    stops at that step with the step and the learning rate named, instead of saving NaN weights."""
    from layerprobe.errors import UserError

    pruned = drop_layers(tiny_loaded("llama"), [1])
    with torch.no_grad():
        pruned.model.get_output_embeddings().weight[0, 0] = float("nan")
    with pytest.raises(UserError, match=r"healing diverged: the loss is nan at step 1; lower --lr"):
        heal(pruned, _tiny_examples(), HealConfig(how="full", steps=3, lr=1e-3, batch_size=3))


def test_schedule_warms_up_then_decays_to_zero() -> None:
    cfg = HealConfig(steps=100, lr=1.0, warmup=10)
    lrs = [cfg.lr_at(s) for s in range(100)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert all(b <= a for a, b in zip(lrs[9:], lrs[10:]))
    assert lrs[-1] < 1e-3 and lrs[54] == pytest.approx(0.5, abs=0.02)


# ------------------------------------------------------------------------------------ CLI


def _write_data(path: Path, n: int = 6) -> Path:
    path.write_text("".join(json.dumps({"prompt": e.prompt, "completion": e.completion}) + "\n" for e in _tiny_examples(n)))
    return path


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_checkpoint(tmp_path_factory.mktemp("heal") / "tiny", "qwen3")


def _heal_args(ckpt: Path, data: Path, out: Path, *extra: str) -> list[str]:
    return [
        "heal",
        "--model",
        str(ckpt),
        "--drop",
        "4,5",
        "--data",
        str(data),
        "--raw-prompts",
        "--steps",
        "3",
        "--batch-size",
        "2",
        "--rank",
        "4",
        "--alpha",
        "8",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def test_heal_cli_writes_a_servable_checkpoint_and_analyze_shows_it_labelled(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM

    from layerprobe.data import load_run

    data = _write_data(tmp_path / "d.jsonl")
    out = tmp_path / "healed"
    res = run_cli(capsys, *_heal_args(tiny_ckpt, data, out))
    assert res.code == 0, res.err
    assert "healed (lora, 3 steps on d.jsonl" in res.out
    model = AutoModelForCausalLM.from_pretrained(out)
    assert model.config.num_hidden_layers == 4
    prov = json.loads((out / "layerprobe.json").read_text())
    h = prov["healing"]
    assert prov["dropped"] == [4, 5]
    assert h["data"]["kind"] == "file" and len(h["data"]["file_sha1"]) == 40 and len(h["data"]["sha1"]) == 40
    assert (h["how"], h["steps"], h["batch_size"], h["lora"]["rank"], h["lora"]["alpha"]) == ("lora", 3, 2, 4, 8)
    assert h["final_loss"] > 0 and h["tokens_seen"] > 0 and h["seconds"] > 0
    assert not (out / ".heal" / "state.pt").exists()

    # the same command again: nothing to do
    res = run_cli(capsys, *_heal_args(tiny_ckpt, data, out))
    assert res.code == 0 and "already healed" in res.out
    # other settings on the same --out: refused, unless --force
    res = run_cli(capsys, *_heal_args(tiny_ckpt, data, out)[:-2], "--out", str(out), "--lr", "1e-3")
    assert_one_line_error(res, "different settings", "lr")

    task = tmp_path / "t.jsonl"
    task.write_text(
        "".join(json.dumps({"id": str(i), "question": f"w{10 + i} w{20 + i}", "answer": "1"}) + "\n" for i in range(2))
    )
    run_dir = tmp_path / "run"
    args = ["analyze", "--model", str(tiny_ckpt), "--drop", "4,5", "--variant", f"healed={out}", "--task", "gsm8k"]
    args += ["--task-file", str(task), "--budgets", "4", "--samples", "1", "--device", "cpu", "--out", str(run_dir)]
    res = run_cli(capsys, *args)
    assert res.code == 0, res.err
    run = load_run(run_dir)
    spec = run.info.variants[-1]
    assert spec.name == "healed" and spec.checkpoint == str(out) and spec.dropped == [4, 5]
    assert spec.provenance is not None and spec.provenance["healing"]["how"] == "lora"
    assert run.info.config.extra_variants == {"healed": str(out)}
    assert {s.variant for s in run.samples} == {"base", "drop-4-5", "healed"}
    html = (run_dir / "report.html").read_text()
    assert "healed: lora, 3 steps on d.jsonl" in html
    assert html.count('<span class="tag good">healed: ') == 1  # only the healed variant carries the label


def test_heal_cli_resumes_after_an_interruption(tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import layerprobe.prune.heal as heal_mod

    data = _write_data(tmp_path / "d.jsonl")
    out = tmp_path / "h"
    args = _heal_args(tiny_ckpt, data, out, "--steps", "5", "--save-every", "1")
    real = heal_mod.heal

    def stop_after_two(*a, **k):  # as if Ctrl-C arrived during step 3
        calls = iter(range(100))
        return real(*a, **{**k, "should_stop": lambda: next(calls) >= 2})

    heal_mod.heal = stop_after_two
    try:
        res = run_cli(capsys, *args)
    finally:
        heal_mod.heal = real
    assert res.code == 130 and "to resume: " in res.err
    assert (out / ".heal" / "state.pt").is_file() and not (out / "layerprobe.json").exists()
    assert json.loads((out / ".heal" / "heal.json").read_text())["status"] == "interrupted"
    res = run_cli(capsys, *args)
    assert res.code == 0, res.err
    prov = json.loads((out / "layerprobe.json").read_text())
    assert prov["healing"]["resumed_from_step"] == 2 and prov["healing"]["steps"] == 5


def test_a_second_healing_process_on_the_same_out_is_refused(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from filelock import FileLock

    from layerprobe.data.store import LOCK_FILE

    data = _write_data(tmp_path / "d.jsonl")
    out = tmp_path / "h"
    out.mkdir()
    with FileLock(str(out / LOCK_FILE)):  # as another process would hold it
        assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, out)), "being written by another layerprobe job")
    assert not (out / "layerprobe.json").exists()
    assert run_cli(capsys, *_heal_args(tiny_ckpt, data, out)).code == 0  # released: the same command runs


def test_a_pruned_checkpoint_is_distilled_from_the_model_it_was_pruned_from(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from layerprobe.models.loading import load_model
    from layerprobe.prune.surgery import save_model

    pruned_dir = save_model(drop_layers(load_model(str(tiny_ckpt), device="cpu"), [1, 2]), tmp_path / "pruned")
    data = _write_data(tmp_path / "d.jsonl")
    out = tmp_path / "h"
    args = ["heal", "--model", str(pruned_dir), "--how", "distill-full", "--data", str(data), "--raw-prompts"]
    res = run_cli(capsys, *args, "--steps", "2", "--batch-size", "3", "--device", "cpu", "--out", str(out))
    assert res.code == 0, res.err
    prov = json.loads((out / "layerprobe.json").read_text())
    assert prov["dropped"] == [1, 2] and prov["layer_map"] == [0, 3, 4, 5]
    h = prov["healing"]
    assert h["how"] == "distill-full" and h["params"] == "full" and h["loss"] == "kl" and "lora" not in h
    assert h["teacher"]["source"] == str(tiny_ckpt)
    assert h["pruned_from"]["checkpoint"] == str(pruned_dir)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such file"),
        (b"", "empty"),
        (b"\n\n", "empty"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"prompt": "' + b"w1 " * 1_500_000 + b'", "completion": "w2"}\n', "over 4 MiB"),
        (b"{not json}\n", "not JSON"),
        (b'{"prompt": "w1"}\n', "no completion"),
        (b'{"prompt": "w1", "completion": "  "}\n', "no completion"),
        (b'["w1", "w2"]\n', "JSON object"),
    ],
)
def test_bad_data_files_exit_2_and_write_nothing(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None, fragment: str
) -> None:
    data = tmp_path / "d.jsonl"
    if content is not None:
        data.write_bytes(content)
    out = tmp_path / "out"
    assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, out)), "--data", fragment)
    assert not out.exists()


def test_bad_heal_settings_exit_2_and_write_nothing(
    tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _write_data(tmp_path / "d.jsonl")
    out = tmp_path / "out"
    unpruned = [a for a in _heal_args(tiny_ckpt, data, out) if a not in ("--drop", "4,5")]
    assert_one_line_error(run_cli(capsys, *unpruned), "is not pruned", "--force")
    assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, out, "--steps", "0")), "--steps 0")
    assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, out, "--how", "magic")), "--how magic", "lora")
    # sizes that would hang or exhaust memory, numbers no optimizer can use: refused before any work
    for flag, value, fragment in [
        ("--batch-size", "100000000000", "1 to 4,096"),
        ("--grad-accum", "100000000000", "1 to 4,096"),
        ("--steps", "100000000000", "1 to 10,000,000"),
        ("--rank", "100000", "narrowest target module is"),
        ("--seed", "100000000000000000000000", "2**63"),
        ("--lr", "1e308", "(0, 1]"),
        ("--lr", "nan", "(0, 1]"),
        ("--max-len", "2000000", "2 to 1,048,576"),
        ("--format", "zzz", "valid formats are"),
    ]:
        t0 = time.monotonic()
        assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, out, flag, value)), f"{flag} ", fragment)
        assert time.monotonic() - t0 < 30
    # found only once the examples are tokenized: still refused before anything is written, so the
    # corrected command is not held back by a half-made output
    assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, out, "--max-len", "2")), "--max-len 2")
    assert not out.exists()
    full_with_rank = [a for a in _heal_args(tiny_ckpt, data, out, "--how", "full")]
    assert_one_line_error(run_cli(capsys, *full_with_rank), "LoRA settings")
    assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, out, "--target-modules", "nope")), "nope", "not found")
    assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, out, "--task", "toy-mix")), "only with --data traces")
    traces = [a if a != str(data) else "traces" for a in _heal_args(tiny_ckpt, data, out) if a != "--raw-prompts"]
    assert_one_line_error(run_cli(capsys, *traces), "--data traces needs --task")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, foreign)), "not a layerprobe heal output")
    import layerprobe.prune.heal as heal_mod

    monkeypatch.setattr(heal_mod, "peft_available", lambda: False)
    assert_one_line_error(run_cli(capsys, *_heal_args(tiny_ckpt, data, out)), "pip install 'layerprobe[heal]'")
    assert not out.exists()
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]


def test_a_variant_with_another_tokenizer_is_refused(tiny_ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from tests.helpers import tiny_model

    other = tmp_path / "other"
    tiny_model("qwen3").save_pretrained(other, safe_serialization=True)
    words = [w.upper() for w in WORDS]  # same size, other words
    tok = Tokenizer(models.WordLevel(vocab={w: i for i, w in enumerate(words)}, unk_token="<UNK>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<PAD>", unk_token="<UNK>", eos_token="</S>").save_pretrained(other)
    run_dir = tmp_path / "run"
    task = tmp_path / "t.jsonl"
    task.write_text(json.dumps({"id": "1", "question": "w10 w20", "answer": "1"}) + "\n")
    base = ["analyze", "--model", str(tiny_ckpt), "--task", "gsm8k", "--task-file", str(task), "--budgets", "4"]
    base += ["--samples", "1", "--device", "cpu", "--drop", "4,5", "--out", str(run_dir)]
    assert_one_line_error(run_cli(capsys, *base, "--variant", f"x={other}"), "--variant x=", "tokenizer differs")
    assert not run_dir.exists()
    assert_one_line_error(run_cli(capsys, *base, "--variant", "x"), "NAME=CHECKPOINT_DIR")
    assert_one_line_error(run_cli(capsys, *base, "--variant", f"base={tiny_ckpt}"), "'base'")
    assert_one_line_error(run_cli(capsys, *base, "--variant", f"drop-4-5={tiny_ckpt}"), "drop-4-5", "taken")
    assert_one_line_error(run_cli(capsys, *base, "--variant", f"a={tmp_path}"), "not a checkpoint directory")
    twice = ["--variant", f"a={tiny_ckpt}", "--variant", f"a={tiny_ckpt}"]
    assert_one_line_error(run_cli(capsys, *base, *twice), "given twice")
    assert not run_dir.exists()


@pytest.mark.slow
@pytest.mark.parametrize("how", ["lora", "full", "distill"])
def test_each_method_runs_on_smollm2(how: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM

    data = tmp_path / "d.jsonl"
    rows = [("What is 2 + 3?", "2 + 3 = 5. The answer is 5."), ("Name a colour.", "Blue is a colour.")] * 2
    data.write_text("".join(json.dumps({"prompt": p, "completion": c}) + "\n" for p, c in rows))
    out = tmp_path / how
    args = ["heal", "--model", "smollm2-135m", "--drop", "20,21", "--how", how, "--data", str(data), "--raw-prompts"]
    args += ["--steps", "2", "--batch-size", "2", "--device", "cpu", "--out", str(out)]
    res = run_cli(capsys, *args)
    assert res.code == 0, res.err
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 28
    assert json.loads((out / "layerprobe.json").read_text())["healing"]["how"] == how


# ------------------------------------------------------------------------------------ GRPO


def _toy_prompts(task: str = "short", n: int = 8) -> list:
    from layerprobe.models.loading import load_model
    from layerprobe.prune.grpo import PromptExample
    from layerprobe.scaling.engine import build_prompt
    from layerprobe.toy.tasks import sample_problems

    tok = load_model("toy", device="cpu").tokenizer
    fmt = get_format("think-tags")
    return [
        PromptExample(build_prompt(tok, fmt, p.prompt), p.answer, "digit", task, p.id)
        for p in sample_problems(task, n, seed=0, split="train")
    ]


@pytest.mark.parametrize("how", ["grpo", "grpo-full"])
def test_grpo_resumed_lands_on_the_same_weights_as_an_uninterrupted_run(how: str, tmp_path: Path) -> None:
    """GRPO samples its completions: a resumed run must sample the same ones (the trainer's RNG states
    travel with its checkpoints and generation starts each step), so its weights equal, bit for bit,
    those of a run that was never stopped (the toy, drop 10,11, short chains: rewards differ within a
    group, so the weights do move)."""
    from layerprobe.errors import UserError
    from layerprobe.models.loading import load_model
    from layerprobe.prune.grpo import grpo

    base = load_model("toy", device="cpu")
    pruned = drop_layers(base, [10, 11])
    fmt = get_format("think-tags")
    prompts = _toy_prompts()
    lora = {"rank": 4, "alpha": 8} if how == "grpo" else {}
    cfg = HealConfig(how=how, steps=3, lr=1e-3, batch_size=4, grad_accum=2, group_size=4, kl=0.04, save_every=1, **lora)
    straight = grpo(pruned, prompts, cfg, fmt=fmt)
    calls = iter(range(100))
    with pytest.raises(HealStopped) as stopped:
        grpo(pruned, prompts, cfg, fmt=fmt, state_dir=tmp_path, should_stop=lambda: next(calls) >= 0)
    assert stopped.value.step == 1
    resumed = grpo(pruned, prompts, cfg, fmt=fmt, state_dir=tmp_path)
    assert resumed.resumed_from == 1
    assert resumed.losses == straight.losses and len(straight.losses) == 3  # the reward of every step
    a, b = straight.loaded.model.state_dict(), resumed.loaded.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    moved = max(float((a[k] - pruned.model.state_dict()[k]).abs().max()) for k in a)
    assert moved > 0
    for key in ("tokens_generated", "tokens_trained", "groups", "completions"):
        assert resumed.record[key] == straight.record[key], key
    assert straight.record["groups"] == 6 and straight.record["completions"] == 24
    assert type(straight.loaded.model) is type(pruned.model)  # a plain model, not TRL's patched one
    # a checkpoint of other settings is not resumed
    other = HealConfig(how=how, steps=3, lr=2e-3, batch_size=4, grad_accum=2, group_size=4, kl=0.04, save_every=1, **lora)
    with pytest.raises(UserError, match="different healing run"):
        grpo(pruned, prompts, other, fmt=fmt, state_dir=tmp_path)


def _grpo_args(out: Path, *extra: str, task: bool = True, lora: bool = True) -> list[str]:
    args = ["heal", "--model", "toy", "--drop", "10,11", "--how", "grpo"]
    args += ["--task", "toy-short", "--limit", "8"] if task else []
    args += ["--steps", "2", "--batch-size", "8", "--group-size", "4", "--kl", "0.04"]
    args += ["--rank", "4", "--alpha", "8"] if lora else []
    return [*args, "--device", "cpu", "--out", str(out), *extra]


def test_grpo_cli_writes_a_servable_checkpoint_that_records_its_reward(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import AutoModelForCausalLM

    out = tmp_path / "g"
    res = run_cli(capsys, *_grpo_args(out))
    assert res.code == 0, res.err
    assert "healed (grpo, 2 steps on toy-short prompts; reward " in res.out and "tokens generated + " in res.out
    prov = json.loads((out / "layerprobe.json").read_text())
    h = prov["healing"]
    assert prov["dropped"] == [10, 11]
    assert (h["how"], h["params"], h["loss"], h["steps"], h["groups"], h["completions"]) == ("grpo", "lora", "reward", 2, 4, 16)
    assert h["grpo"] == {"group_size": 4, "kl": 0.04, "temperature": None, "max_completion": None, "format_reward": 0.0}
    assert h["sampling"] == {"temperature": 0.6, "top_p": 0.95, "top_k": 20, "max_completion": 160}
    assert "gold answer" in h["reward"]["definition"] and h["reward"]["format_weight"] == 0.0
    assert 0 <= h["first_reward"] <= 1 and 0 <= h["final_reward"] <= 1
    assert h["tokens_generated"] > 0 and h["tokens_trained"] > h["tokens_generated"] and h["seconds"] > 0
    assert h["data"]["kind"] == "prompts" and h["data"]["task"] == "toy-short" and len(h["data"]["sha1"]) == 40
    assert h["trl"] and h["peft"]
    meta = json.loads((out / ".heal" / "heal.json").read_text())
    assert meta["schema_version"] == 3 and len(meta["rewards"]) == 2 and meta["status"] == "complete"
    assert not (out / ".heal" / "grpo").exists()  # the trainer's checkpoints go once the run is complete
    # plain transformers loads it, and it is the model healing returned
    from layerprobe.models.loading import load_model

    model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    assert model.config.num_hidden_layers == 10
    healed = load_model(str(out), device="cpu")
    assert torch.equal(_logits(model, IDS % 40), _logits(healed.model, IDS % 40))
    again = run_cli(capsys, *_grpo_args(out))
    assert again.code == 0 and "already healed" in again.out
    assert_one_line_error(run_cli(capsys, *_grpo_args(out, "--kl", "0.1")), "different settings", "grpo")

    from layerprobe.report.render import _healed_label

    class Spec:
        provenance = prov

    assert _healed_label(Spec()) == "GRPO (LoRA), 2 steps on toy-short prompts, reward: correct answer"


def test_grpo_cli_resumes_after_an_interruption_to_the_same_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import layerprobe.prune.grpo as grpo_mod

    straight, out = tmp_path / "straight", tmp_path / "stopped"
    assert run_cli(capsys, *_grpo_args(straight, "--how", "grpo-full", "--steps", "3", lora=False)).code == 0
    args = _grpo_args(out, "--how", "grpo-full", "--steps", "3", "--save-every", "1", lora=False)
    real = grpo_mod.grpo

    def stop_after_one(*a, **k):  # as if Ctrl-C arrived during step 1
        calls = iter(range(100))
        return real(*a, **{**k, "should_stop": lambda: next(calls) >= 0})

    grpo_mod.grpo = stop_after_one
    try:
        res = run_cli(capsys, *args)
    finally:
        grpo_mod.grpo = real
    assert res.code == 130 and "to resume: " in res.err
    assert not (out / "layerprobe.json").exists() and any((out / ".heal" / "grpo").glob("checkpoint-*"))
    assert json.loads((out / ".heal" / "heal.json").read_text())["status"] == "interrupted"
    res = run_cli(capsys, *args)
    assert res.code == 0, res.err
    prov = json.loads((out / "layerprobe.json").read_text())
    assert prov["healing"]["resumed_from_step"] == 1 and prov["healing"]["how"] == "grpo-full"
    from safetensors.torch import load_file

    a, b = load_file(straight / "model.safetensors"), load_file(out / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_bad_grpo_input_exits_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    for extra, fragments in [
        (["--group-size", "1"], ["--group-size 1", "2 to"]),
        (["--group-size", "3"], ["--group-size 3 does not divide the 8 completions"]),
        (["--kl", "-1"], ["--kl -1"]),
        (["--kl", "nan"], ["--kl nan"]),
        (["--temperature", "0"], ["--temperature 0"]),
        (["--temperature", "inf"], ["--temperature inf"]),
        (["--temperature", "1e-300"], ["--temperature 1e-300", "0.01 to 100"]),  # before: an internal error (inf/nan)
        (["--temperature", "1e-45"], ["--temperature 1e-45", "0.01 to 100"]),
        (["--max-completion", "0"], ["--max-completion 0"]),
        (["--format-reward", "-0.5"], ["--format-reward -0.5"]),
        (["--max-len", "512"], ["--max-len", "--how grpo samples its own"]),
        (["--budget", "64"], ["--budget"]),
        (["--distill-base", "toy"], ["--distill-base"]),
        (["--how", "lora"], ["--group-size, --kl", "GRPO settings"]),
        (["--how", "full"], ["GRPO settings"]),
    ]:
        assert_one_line_error(run_cli(capsys, *_grpo_args(out, *extra)), *fragments)
    data = tmp_path / "p.jsonl"
    for content, fragment in [
        (b'{"prompt": "x"}\n', 'no "answer"'),
        (b'{"prompt": "x", "answer": true}\n', 'no "answer"'),
        (b'{"prompt": "x", "answer": "3", "answer_type": "mc"}\n', "answer_type 'mc'"),
        (b'{"answer": "3"}\n', 'no "prompt"'),
        (b"", "empty"),
    ]:
        data.write_bytes(content)
        args = _grpo_args(out, "--data", str(data), task=False)
        assert_one_line_error(run_cli(capsys, *args), "--data", fragment)
    import layerprobe.prune.grpo as grpo_mod

    monkeypatch.setattr(grpo_mod, "trl_available", lambda: False)
    assert_one_line_error(run_cli(capsys, *_grpo_args(out)), "pip install 'layerprobe[heal]'", "trl")
    assert not out.exists()


def test_grpo_reads_prompts_and_answers_from_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--data FILE: one {"prompt", "answer", "answer_type"} per line, wrapped as analyze wraps a question."""
    from layerprobe.toy.tasks import sample_problems

    data = tmp_path / "p.jsonl"
    rows = [
        {"prompt": p.prompt, "answer": p.answer, "answer_type": "digit"}
        for p in sample_problems("short", 4, seed=3, split="train")
    ]
    # a prompt far longer than the toy's 512 positions (before: out of memory after minutes): a counted skip
    rows.append({"prompt": " ".join(["7 + 1"] * 5000), "answer": "8", "answer_type": "digit"})
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "g"
    args = _grpo_args(out, "--data", str(data), "--steps", "1", task=False)
    res = run_cli(capsys, *args)
    assert res.code == 0, res.err
    h = json.loads((out / "layerprobe.json").read_text())["healing"]
    assert h["data"]["kind"] == "prompts" and h["data"]["source"] == "file" and h["data"]["n"] == 5
    assert h["data"]["skipped"] == {"prompts too long for the model's 512 positions with a 160-token completion": 1}
    assert h["prompts"] == 4 and "p.jsonl" in res.out and "skipped 1 of 5 prompts too long" in res.err
    data.write_text(json.dumps(rows[-1]) + "\n")
    res = run_cli(capsys, *_grpo_args(tmp_path / "g2", "--data", str(data), "--steps", "1", task=False))
    assert_one_line_error(res, "every one of the 1 prompts too long for the model's 512 positions")
    assert not (tmp_path / "g2").exists()


def test_trl_is_imported_only_inside_the_grpo_functions() -> None:
    """The base install works without the heal extra: TRL is imported by prune/grpo.py only, inside its
    functions (never at module level, never elsewhere)."""
    import ast

    import layerprobe

    root = Path(layerprobe.__file__).parent
    found = []
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "trl" or n.startswith("trl.") for n in names):
                found.append((path.relative_to(root).as_posix(), id(node) in top))
    assert found and {p for p, _ in found} == {"prune/grpo.py"}
    assert not any(at_top for _, at_top in found)


@pytest.mark.slow
def test_grpo_runs_on_smollm2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from transformers import AutoModelForCausalLM

    data = tmp_path / "p.jsonl"
    rows = [("What is 2 + 3?", "5"), ("What is 7 - 4?", "3")]
    data.write_text("".join(json.dumps({"prompt": p, "answer": a, "answer_type": "integer"}) + "\n" for p, a in rows))
    out = tmp_path / "grpo"
    args = ["heal", "--model", "smollm2-135m", "--drop", "20,21", "--how", "grpo", "--data", str(data), "--format", "s1"]
    args += ["--steps", "2", "--batch-size", "4", "--group-size", "4", "--max-completion", "16", "--device", "cpu"]
    res = run_cli(capsys, *args, "--out", str(out))
    assert res.code == 0, res.err
    assert AutoModelForCausalLM.from_pretrained(out).config.num_hidden_layers == 28
    h = json.loads((out / "layerprobe.json").read_text())["healing"]
    assert h["how"] == "grpo" and h["sampling"]["temperature"] == 1.0 and h["tokens_generated"] > 0
