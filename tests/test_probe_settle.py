"""Settling depth, deep-thinking tokens and per-layer summaries on constructed JSD profiles."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from layerprobe.probe.aggregate import layer_summary, position_bins, position_heatmap
from layerprobe.probe.layer_files import TraceLayers
from layerprobe.probe.settle import deep_thinking, deep_threshold, never_settled, settle_summary, settling_depth

NAN = np.nan


def test_settling_depth_first_layer_at_or_below_g():
    jsd = np.array(
        [
            [0.6, 0.55, 0.5, 0.7, 0.1, 0.0],  # equal to g at l=2 counts (≤); a later rise does not undo it
            [0.2, 0.9, 0.9, 0.9, 0.9, 0.0],  # settles at once
            [0.9, 0.8, 0.7, 0.6, 0.51, 0.0],  # only the last layer
            [0.9, 0.8, 0.7, 0.6, 0.51, 0.52],  # never (a hand-made profile): L − 1, counted
            [NAN] * 6,  # lens skipped
        ]
    )
    np.testing.assert_array_equal(settling_depth(jsd, g=0.5), [2, 0, 5, 5, -1])
    np.testing.assert_array_equal(never_settled(jsd, g=0.5), [False, False, False, True, False])
    np.testing.assert_array_equal(settling_depth(jsd, g=0.05), [5, 5, 5, 5, -1])
    np.testing.assert_array_equal(settling_depth(jsd, g=0.65), [0, 0, 3, 3, -1])


def test_settling_depth_equals_running_minimum_definition():
    rng = np.random.default_rng(1)
    jsd = rng.uniform(0, 0.7, (200, 12))
    jsd[:, -1] = 0
    for g in (0.1, 0.3, 0.5):
        c = settling_depth(jsd, g)
        for t in range(200):
            running = np.minimum.accumulate(jsd[t])
            assert c[t] == min(l for l in range(12) if running[l] <= g)


@pytest.mark.parametrize(
    "L, rho, first_deep_1based", [(28, 0.85, 24), (20, 0.85, 17), (12, 0.85, 11), (6, 0.5, 3), (10, 1.0, 10)]
)
def test_deep_threshold_is_ceil_rho_L_in_1_based_depth(L, rho, first_deep_1based):
    # 0.85 * 20 = 17.000000000000004 in floating point: must still be 17
    assert deep_threshold(L, rho) == first_deep_1based - 1
    c = np.arange(-1, L)
    flags = deep_thinking(c, L, rho)
    assert flags.tolist() == [False] + [(l + 1) >= first_deep_1based for l in range(L)]


def test_settle_summary_with_pruned_layers():
    layers = np.array([0, 1, 2, 3, 5, 6, 8, 9, 10, 11])  # original indices of a 12-layer model pruned to 10
    L = len(layers)
    jsd = np.full((5, L), 0.9)
    jsd[:, -1] = 0
    for t, c in enumerate([1, 4, 8, 9]):
        jsd[t, c:] = 0.0
    jsd[4] = NAN
    s = settle_summary(jsd, layers, g=0.5, rho=0.85)
    json.dumps(s)
    assert s["n_tokens"] == 5 and s["n_lens_tokens"] == 4
    assert s["deep_from"] == math.ceil(0.85 * 10) - 1 == 8 and s["deep_from_original"] == 10
    assert s["n_deep"] == 2 and s["deep_thinking_ratio"] == 0.5
    assert s["settling_depth_mean"] == pytest.approx((1 + 4 + 8 + 9) / 4)
    assert s["settling_depth_fraction_mean"] == pytest.approx((2 + 5 + 9 + 10) / 40)
    assert s["settling_depth_original_mean"] == pytest.approx((1 + 5 + 10 + 11) / 4)


def _tl(layers, jsd, bi=None, key="k") -> TraceLayers:
    T, L = jsd.shape
    bi = np.full((T, L), 0.1) if bi is None else bi
    return TraceLayers(
        key=key,
        layers=np.asarray(layers, dtype=np.int16),
        tokens=np.zeros(T, dtype=np.int32),
        block_influence=bi,
        norm=np.ones((T, L)),
        jsd=jsd,
        entropy=np.ones((T, L)),
        top1_agree=np.ones((T, L)),
        rank=np.where(np.isnan(jsd), -1, 0).astype(np.int32),
    )


def test_layer_summary_by_original_layer():
    base = _tl(
        [0, 1, 2, 3], np.array([[0.9, 0.9, 0.2, 0.0], [0.9, 0.1, 0.0, 0.0], [NAN] * 4]), bi=np.array([[0.1, 0.2, 0.3, 0.4]] * 3)
    )
    pruned = _tl([0, 2, 3], np.array([[0.9, 0.9, 0.0]]), bi=np.array([[0.5, 0.7, 0.9]]))
    s = layer_summary([base, pruned], g=0.5, rho=0.85)
    json.dumps(s)
    assert s["layers"] == [0, 1, 2, 3] and s["n_tokens"] == 4
    # token-weighted: layer 0 has 3 base tokens (0.1) and 1 pruned (0.5)
    assert s["block_influence"] == pytest.approx([0.2, 0.2, (0.9 + 0.7) / 4, (1.2 + 0.9) / 4])
    assert s["jsd"][1] == pytest.approx(0.5) and s["jsd"][0] == pytest.approx(0.9)
    st = s["settling"]
    assert st["n_lens_tokens"] == 3
    # base: c = 2, 1 (of 4 layers: deep from ceil(3.4)=4 → only c=3); pruned: c = 2 (of 3: deep from ceil(2.55)=3 → c=2)
    assert st["per_trace_deep_thinking_ratio"] == [0.0, 1.0]
    assert st["deep_thinking_ratio"] == pytest.approx(1 / 3)
    assert st["settling_depth_original_mean"] == pytest.approx((2 + 1 + 3) / 3)


def test_position_bins_and_heatmap():
    a = np.arange(10, dtype=float).reshape(10, 1) * np.array([[1.0, 2.0]])
    b = position_bins(a, 5)
    np.testing.assert_allclose(b[:, 0], [0.5, 2.5, 4.5, 6.5, 8.5])
    np.testing.assert_allclose(b[:, 1], 2 * b[:, 0])
    short = position_bins(a[:3], 5)  # fewer tokens than bins: empty bins are NaN
    assert np.isnan(short).any(axis=1).sum() == 2
    a[0, 0] = NAN
    assert position_bins(a, 5)[0, 0] == 1.0  # NaN skipped
    t1 = _tl([0, 1], np.zeros((4, 2)))
    t2 = _tl([0, 2], np.ones((8, 2)))
    layers, hm = position_heatmap([t1, t2], "jsd", n_bins=2)
    assert layers == [0, 1, 2]
    np.testing.assert_allclose(hm, [[0.5, 0.0, 1.0], [0.5, 0.0, 1.0]])
