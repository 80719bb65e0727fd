"""TraceLayers .npz files: keys, dtypes, round trip, large ranks and norms, schema checks."""

from __future__ import annotations

import numpy as np
import pytest

from layerprobe.probe.layer_files import SCHEMA_VERSION, TraceLayers, load_trace_layers, save_trace_layers


def _trace(T=300, L=7, seed=0, norm_scale=50.0) -> TraceLayers:
    rng = np.random.default_rng(seed)
    jsd = rng.uniform(0, 0.69, (T, L)).astype(np.float32)
    jsd[:, -1] = 0
    jsd[1::2] = np.nan  # lens every 2nd step
    rank = rng.integers(0, 150_000, (T, L)).astype(np.int32)
    rank[1::2] = -1
    return TraceLayers(
        key="p3/s1",
        layers=np.array([0, 1, 2, 4, 5, 8, 9], dtype=np.int16)[:L],
        tokens=rng.integers(0, 150_000, T).astype(np.int32),
        block_influence=rng.uniform(0, 1, (T, L)).astype(np.float32),
        norm=(rng.uniform(0, 1, (T, L)) * norm_scale).astype(np.float32),
        jsd=jsd,
        entropy=rng.uniform(0, 5, (T, L)).astype(np.float32),
        top1_agree=(rng.uniform(0, 1, (T, L)) > 0.5).astype(np.float32),
        rank=rank,
        lens="full",
        lens_every=2,
        lens_positions=np.arange(0, T, 2, dtype=np.int32),
        n_layers_original=10,
    )


def test_round_trip_keys_and_dtypes(tmp_path):
    tl = _trace()
    path = save_trace_layers(tmp_path / "t.npz", tl)
    with np.load(path) as d:
        assert int(d["schema_version"]) == SCHEMA_VERSION
        assert d["layers"].dtype == np.int16 and d["tokens"].dtype == np.int32 and d["rank"].dtype == np.int32
        for k in ("block_influence", "norm", "jsd", "entropy", "top1_agree"):
            assert d[k].dtype == np.float16 and d[k].shape == (300, 7)
        assert str(d["lens"]) == "full" and int(d["lens_every"]) == 2
    back = load_trace_layers(path)
    assert back.key == "p3/s1" and back.n_layers_original == 10 and back.lens_every == 2
    np.testing.assert_array_equal(back.layers, tl.layers)
    np.testing.assert_array_equal(back.tokens, tl.tokens)
    np.testing.assert_array_equal(back.rank, tl.rank)  # ranks > 2048 survive exactly
    np.testing.assert_array_equal(back.lens_positions, tl.lens_positions)
    for k in ("block_influence", "norm", "jsd", "entropy", "top1_agree"):
        a, b = getattr(back, k), getattr(tl, k)
        assert a.dtype == np.float32
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_norm_overflowing_float16_is_kept_in_float32(tmp_path):
    tl = _trace(norm_scale=1e6)
    with np.load(save_trace_layers(tmp_path / "big.npz", tl)) as d:
        assert d["norm"].dtype == np.float32
    np.testing.assert_allclose(load_trace_layers(tmp_path / "big.npz").norm, tl.norm, rtol=1e-6)


def test_files_are_small(tmp_path):
    T, L = 8192, 28
    tl = _trace(T=T, L=7)
    tl = TraceLayers(
        **{
            **tl.__dict__,
            **{k: np.resize(getattr(tl, k), (T, L)) for k in ("block_influence", "norm", "jsd", "entropy", "top1_agree", "rank")},
            "layers": np.arange(L, dtype=np.int16),
        }
    )
    size = save_trace_layers(tmp_path / "long.npz", tl).stat().st_size
    # 5 float16 + 1 int32 arrays of T × L: at most their raw size (compressed, random data)
    assert size < T * L * (5 * 2 + 4) * 1.05


def test_wrong_schema_or_kind_is_refused(tmp_path):
    path = save_trace_layers(tmp_path / "t.npz", _trace(T=4))
    data = dict(np.load(path))
    np.savez(tmp_path / "old.npz", **{**data, "schema_version": np.int32(99)})
    with pytest.raises(ValueError, match="schema_version 99"):
        load_trace_layers(tmp_path / "old.npz")
    np.savez(tmp_path / "other.npz", **{**data, "kind": np.array("teacher_forced")})
    with pytest.raises(ValueError, match="teacher_forced"):
        load_trace_layers(tmp_path / "other.npz")
