"""Teacher-forced comparison: zero against itself, positive after dropping a layer, equal to an
independent computation, independent of the chunk size; onset; files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from layerprobe import drop_layers
from layerprobe.probe.teacher import kl_onset, load_teacher_forced, save_teacher_forced, teacher_forced
from tests.probe_ref import lively_loaded, reference_stats

PROMPT = [2, 10, 11, 12, 13]


def _trace(n=40, seed=0):
    return torch.randint(6, 128, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


def test_base_against_itself_is_zero(one_thread):
    base = lively_loaded("qwen3")
    tf = teacher_forced(base, base, PROMPT, _trace(), chunk=16)
    assert tf.kl.shape == (40,) and tf.drift.shape == (40, 6)
    assert tf.layers.tolist() == list(range(6))
    assert np.abs(tf.kl).max() <= 1e-6 and np.abs(tf.drift).max() <= 1e-6
    assert tf.onset is None


@pytest.mark.parametrize("family", ["qwen2", "llama"])
def test_pruned_divergence_matches_reference_and_chunking(family, one_thread):
    base = lively_loaded(family)
    pruned = drop_layers(base, [2])
    trace = _trace()
    whole = teacher_forced(base, pruned, PROMPT, trace, chunk=512, threshold=0.05, window=4)
    assert whole.layers.tolist() == [0, 1, 3, 4, 5]
    # independent: one uncached forward of each model, float64 KL
    ids = torch.tensor([PROMPT + trace[:-1]])
    with torch.no_grad():
        lb = torch.log_softmax(base.model(ids).logits[0, len(PROMPT) - 1 :].double(), -1)
        lq = torch.log_softmax(pruned.model(ids).logits[0, len(PROMPT) - 1 :].double(), -1)
    kl = (lb.exp() * (lb - lq)).sum(-1).numpy()
    assert kl.mean() > 0.05  # the dropped layer matters in this model
    np.testing.assert_allclose(whole.kl, kl, atol=1e-4)
    # drift: layers before the dropped one see identical inputs; after it they differ
    assert np.abs(whole.drift[:, :2]).max() <= 1e-6 and whole.drift[:, 2:].mean() > 1e-3
    ref_b = reference_stats(base, PROMPT, trace)["logprobs"]  # (6, T, V) lens of every base layer
    ref_p = reference_stats(pruned, PROMPT, trace)["logprobs"]  # (5, T, V)
    for j, orig in enumerate([0, 1, 3, 4, 5]):
        p, q = ref_b[orig].exp(), ref_p[j].exp()
        m = 0.5 * (p + q)
        jsd = 0.5 * (p * (p.log() - m.log())).sum(-1) + 0.5 * (q * (q.log() - m.log())).sum(-1)
        np.testing.assert_allclose(whole.drift[:, j], jsd.numpy(), atol=1e-4)
        # the pruned model's lens against the BASE model's own output distribution (its final layer)
        f = lb.exp().float()
        mf = 0.5 * (f + q)
        to_base = 0.5 * (f * (f.log() - mf.log())).sum(-1) + 0.5 * (q * (q.log() - mf.log())).sum(-1)
        np.testing.assert_allclose(whole.jsd_to_base[:, j], to_base.numpy(), atol=1e-4)
    assert whole.jsd_to_base[:, -1].mean() > 1e-3  # the last pruned layer does not reproduce the base output
    np.testing.assert_array_equal(whole.top1, lq.argmax(-1).numpy())
    np.testing.assert_array_equal(whole.base_top1, lb.argmax(-1).numpy())
    for chunk in (1, 3, 7):
        part = teacher_forced(base, pruned, PROMPT, trace, chunk=chunk, threshold=0.05, window=4)
        # chunked and whole float32 reductions differ by rounding that grows with the magnitude
        np.testing.assert_allclose(part.kl, whole.kl, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(part.drift, whole.drift, rtol=1e-5, atol=1e-6)
        assert part.onset == whole.onset
    assert whole.onset == kl_onset(kl, 0.05, 4)


def test_onset_definition():
    kl = np.array([0.0, 0.3, 0.3, 0.0, 0.3, 0.3, 0.3, 0.3, 0.0])
    assert kl_onset(kl, threshold=0.2, window=1) == 1
    assert kl_onset(kl, threshold=0.2, window=2) == 1
    assert kl_onset(kl, threshold=0.2, window=3) == 4
    assert kl_onset(kl, threshold=0.2, window=4) == 4
    assert kl_onset(kl, threshold=0.2, window=5) is None
    assert kl_onset(kl, threshold=0.3, window=1) is None  # strictly above
    assert kl_onset(kl[:2], threshold=0.2, window=3) is None


def test_save_and_load(tmp_path, one_thread):
    base = lively_loaded("qwen3")
    tf = teacher_forced(base, drop_layers(base, [0, 5]), PROMPT, _trace(12), chunk=5, threshold=0.01, window=2, key="p1")
    back = load_teacher_forced(save_teacher_forced(tmp_path / "tf.npz", tf))
    with np.load(tmp_path / "tf.npz") as d:
        assert d["kl"].dtype == np.float16 and d["drift"].dtype == np.float16 and d["layers"].dtype == np.int16
    assert back.layers.tolist() == [1, 2, 3, 4] and back.key == "p1" and back.onset == tf.onset
    assert back.threshold == 0.01 and back.window == 2 and back.chunk == 5
    np.testing.assert_array_equal(back.tokens, tf.tokens)
    np.testing.assert_allclose(back.kl, tf.kl, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(back.drift, tf.drift, rtol=1e-3, atol=1e-4)


def test_softcapped_model_logits_are_not_capped_twice():
    """Gemma-2 style models apply their final soft-cap inside forward: the teacher-forced log-probs must
    equal log_softmax of the model's own logits (capping again would flatten them)."""
    import torch
    from transformers import Gemma2Config, Gemma2ForCausalLM

    from layerprobe.models.arch import arch_spec_for
    from layerprobe.models.loaded import LoadedModel
    from layerprobe.probe.teacher import _Reader

    torch.manual_seed(0)
    cfg = Gemma2Config(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=16,
        final_logit_softcapping=2.0,
    )
    model = Gemma2ForCausalLM(cfg).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(50.0)  # logits well beyond the cap, so a second cap would show
    loaded = LoadedModel(
        model=model,
        tokenizer=None,
        name="tiny-gemma2",
        source="from_config:gemma2",
        source_kind="config",
        family="gemma2",
        arch=arch_spec_for("gemma2", "model.layers", "model.norm", "lm_head"),
        layer_map=[0, 1],
        n_layers_original=2,
    )
    ids = torch.tensor([[1, 5, 9, 13, 17, 21]])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float()
        lp, _ = _Reader(loaded, []).run(ids, slice(None))
    ref = torch.log_softmax(logits, -1)
    twice = torch.log_softmax(torch.tanh(logits / 2.0) * 2.0, -1)
    assert float((twice - ref).abs().max()) > 0.1  # capping twice would be visible at this tolerance
    torch.testing.assert_close(lp, ref, atol=1e-6, rtol=1e-5)
