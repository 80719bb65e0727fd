"""The toy task generator, tokenizer, training loop and depth growth."""

from __future__ import annotations

import random

import pytest
import torch

from layerprobe.toy.data import IGNORE, DataMix, encode_example, sample_training_problem
from layerprobe.toy.evaluate import audit_trace, extract_answer
from layerprobe.toy.model import grow_depth, toy_config
from layerprobe.toy.tasks import FACTS, TASK_TYPES, chain_problem, is_test_prompt, sample_problems, solve
from layerprobe.toy.vocab import VOCAB, build_tokenizer


@pytest.mark.parametrize("task_type", list(TASK_TYPES))
def test_generator_deterministic_and_correct(task_type):
    a = sample_problems(task_type, 40, seed=1)
    b = sample_problems(task_type, 40, seed=1)
    assert [p.id for p in a] == [p.id for p in b]
    assert len({p.id for p in a}) == 40
    assert [p.id for p in sample_problems(task_type, 40, seed=2)] != [p.id for p in a]
    for p in a:
        assert solve(p.prompt) == p.answer  # recomputed from the prompt text alone
        assert p.task_type == task_type
        if p.kind == "chain":
            assert is_test_prompt(p.prompt)
            lo, hi = TASK_TYPES[task_type]
            assert lo <= p.steps <= hi


def test_hand_checked_chain():
    p = chain_problem(7, ["+5", "*3", "-2"])
    # 7+5=12->2, 2*3=6, 6-2=4
    assert p.thinking == "s1 7 +5 = 2 s2 2 *3 = 6 s3 6 -2 = 4" and p.answer == "4"
    assert p.prompt == "x = 7 s1 +5 s2 *3 s3 -2"


def test_training_never_sees_test_chains():
    rng = random.Random(0)
    for _ in range(2000):
        p = sample_training_problem(rng, 16, DataMix())
        assert p.kind == "fact" or not is_test_prompt(p.prompt)


def _words(ids):
    return [VOCAB[i] for i in ids]


def test_caught_errors_are_corrected_and_learned():
    # every step errs and every error is caught: "wrong Wait , v op = right", the chain goes on right
    p = chain_problem(1, ["+1", "+1", "+1"])
    ids, labels = encode_example(p, random.Random(3), DataMix(step_error=1.0, caught=1.0, recheck=1.0))
    words = _words(ids)
    think = " ".join(words[words.index("<think>") + 1 : words.index("</think>")])
    steps = think.split(" let me check ")[0].split(" s")
    assert len(steps) == 3 and think.count("Wait") == 3
    for i, (v, right) in enumerate([(1, 2), (2, 3), (3, 4)]):
        parts = steps[i].split()
        assert parts[1:4] == [str(v), "+1", "="] and parts[4] != str(right)  # the wrong value
        assert parts[5:] == ["Wait", ",", str(v), "+1", "=", str(right)]  # and its correction
    assert words[-5:] == ["</think>", "\\boxed{", "4", "}", "<eos>"]
    assert " ".join(words).count("let me check") == 1
    # everything after the prompt is learned, the wrong values included (the model learns to err at the data's rate)
    start = words.index("<think>") + 1
    assert all(labels[j] == ids[j] for j in range(start, len(ids))) and all(l == IGNORE for l in labels[:start])


def test_uncaught_errors_propagate_to_the_answer():
    p = chain_problem(1, ["+1", "+1", "+1", "*3"])
    rng = random.Random(5)
    for _ in range(50):
        ids, _ = encode_example(p, rng, DataMix(step_error=0.5, caught=0.0, recheck=0.0))
        words = _words(ids)
        assert "Wait" not in words
        think = words[words.index("<think>") + 1 : words.index("</think>")]
        value = 1
        for j in range(0, len(think), 5):  # s_i v op = r: each step starts from the value written before it
            marker, v, op, eq, r = think[j : j + 5]
            assert int(v) == value and eq == "="
            value = int(r)
        assert words[-3] == str(value)  # the boxed answer is where the written chain arrives


def test_masked_errors_are_caught_and_not_learned():
    p = chain_problem(2, ["+1", "+1", "+1"])
    ids, labels = encode_example(p, random.Random(1), DataMix(step_error=0.0, masked_error=1.0, recheck=0.0))
    words = _words(ids)
    assert words.count("Wait") == 3
    for j, w in enumerate(words):
        if w == "Wait":  # the wrong value before each Wait is in the input, not in the loss
            assert labels[j - 1] == IGNORE and labels[j] == ids[j]
    assert words[-3] == "5"  # every step is corrected: the chain arrives at the right answer


def test_error_rate_of_the_data_mix():
    rng = random.Random(0)
    mix = DataMix()
    steps = caught = 0
    for _ in range(3000):
        p = chain_problem(rng.randrange(10), [rng.choice(["+3", "-2", "*7"]) for _ in range(8)])
        steps += 8
        caught += _words(encode_example(p, rng, mix)[0]).count("Wait")
    assert abs(caught / steps - mix.step_error * mix.caught) < 0.006  # 24,000 steps: sd of the share 0.001


def test_tokenizer_round_trip_and_chat_template(tmp_path):
    tok = build_tokenizer()
    p = sample_problems("long", 1)[0]
    text = f"<q> {p.prompt} </q> <think> {p.thinking} </think> \\boxed{{ {p.answer} }} <eos>"
    ids = tok(text).input_ids
    assert tok.unk_token_id not in ids
    assert tok.decode(ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": p.prompt}], tokenize=False, add_generation_prompt=True)
    assert chat.strip() == f"<q> {p.prompt} </q>"
    tok.save_pretrained(tmp_path)
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(tmp_path)
    assert again(text).input_ids == ids and again.chat_template == tok.chat_template
    assert extract_answer(tok.decode(ids[ids.index(VOCAB.index("<think>")) + 1 :])) == p.answer


def test_facts_table_fixed():
    assert len(FACTS) == 200 and set(FACTS.values()) <= set(range(10))


def test_audit_trace_counts_corrections():
    a = audit_trace("s1 9 +7 = 4 Wait , 9 +7 = 6 s2 6 -8 = 8 s3 8 +5 = 3 Wait , 8 +5 = 3")
    assert (a.steps, a.waits, a.waits_after_error, a.waits_fixing, a.waits_after_correct, a.step_errors) == (3, 2, 1, 1, 1, 0)
    b = audit_trace("s1 9 +7 = 5 s2 5 -8 = 7")
    assert b.step_errors == 1 and b.waits == 0


def test_grow_depth_preserves_function():
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(0)
    small = Qwen3ForCausalLM(toy_config(3, hidden=32, heads=2, mlp=64)).eval()
    big = grow_depth(small).eval()
    assert big.config.num_hidden_layers == 6
    ids = torch.randint(0, 90, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(big(ids).logits, small(ids).logits, atol=1e-5, rtol=1e-5)


def test_a_few_training_steps_reduce_the_loss(tmp_path):
    import json

    from layerprobe.toy.train import Stage, TrainConfig, train

    cfg = TrainConfig(
        hidden=32,
        heads=2,
        mlp=64,
        tokens_per_batch=1024,
        log_every=10,
        ckpt_every=15,
        threads=1,
        stages=[Stage(layers=2, steps=30, lr=3e-3, warmup=5)],
    )
    final = train(cfg, tmp_path / "run", log=lambda s: None)
    log = [json.loads(l) for l in (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()]
    assert log[-1]["loss"] < log[0]["loss"] - 0.5
    assert (final / "model.safetensors").is_file() and (final / "tokenizer.json").is_file()


def test_training_resumes_from_checkpoint(tmp_path):
    import json

    from layerprobe.toy.train import Stage, TrainConfig, train

    stages = [Stage(layers=1, steps=8, lr=3e-3, warmup=2), Stage(layers=2, steps=4, lr=1e-3, warmup=1)]
    cfg = TrainConfig(hidden=32, heads=2, mlp=64, tokens_per_batch=512, log_every=2, ckpt_every=4, threads=1, stages=stages)
    train(cfg, tmp_path / "a", log=lambda s: None)
    steps = [(r["stage"], r["step"]) for r in map(json.loads, (tmp_path / "a" / "train_log.jsonl").read_text().splitlines())]
    assert steps == [(0, 2), (0, 4), (0, 6), (0, 8), (1, 2), (1, 4)]
    # a second run of the same command finds the finished run and trains nothing more
    train(cfg, tmp_path / "a", log=lambda s: None)
    assert len((tmp_path / "a" / "train_log.jsonl").read_text().splitlines()) == 6


def test_interrupted_training_resumes_where_it_stopped(tmp_path):
    import json

    from layerprobe.toy.train import Stage, TrainConfig, train

    cfg = TrainConfig(
        hidden=32,
        heads=2,
        mlp=64,
        tokens_per_batch=512,
        log_every=2,
        ckpt_every=4,
        threads=1,
        stages=[Stage(layers=1, steps=10, lr=3e-3, warmup=2)],
    )

    def crash_at_step_6(line: str) -> None:
        if "step 6/" in line:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg, tmp_path / "r", log=crash_at_step_6)
    assert not (tmp_path / "r" / "final").exists()
    train(cfg, tmp_path / "r", log=lambda s: None)
    steps = [r["step"] for r in map(json.loads, (tmp_path / "r" / "train_log.jsonl").read_text().splitlines())]
    assert steps == [2, 4, 6, 6, 8, 10]  # resumed from the step-4 checkpoint, not from scratch
    assert (tmp_path / "r" / "final" / "model.safetensors").is_file()


def test_direct_twin_data_has_empty_thinking_and_the_right_answer():
    # the non-reasoning twin: <think> </think> then the boxed right answer, whatever the noise settings
    rng = random.Random(0)
    mix = DataMix(step_error=1.0, caught=0.0, recheck=1.0, masked_error=1.0, thinking=False)
    for p in [chain_problem(7, ["+5", "*3", "-2"]), *sample_problems("facts", 5)]:
        ids, labels = encode_example(p, rng, mix)
        words = _words(ids)
        i = words.index("<think>")
        assert words[i + 1 :] == ["</think>", "\\boxed{", p.answer, "}", "<eos>"]
        assert all(l == IGNORE for l in labels[: i + 1]) and labels[i + 1 :] == ids[i + 1 :]
