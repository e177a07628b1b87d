"""Tests of kmeans_1d's search on large inputs (_solve_large): the summary optimum, the joint boundary search, the
block-mean runs, the Panter-Dite start, and the row loop's thread handling."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import qbench.quant.kmeans1d.runs as R
import qbench.quant.kmeans1d.search as S
from qbench.quant.kmeans1d import assign, kmeans_1d, kmeans_1d_dp, kmeans_1d_rows
from qbench.quant.kmeans1d.base import _ceil_to, _fit
from qbench.quant.kmeans1d.labels import _labels


def _sse(x: torch.Tensor, c: torch.Tensor, labels: torch.Tensor) -> float:
    return float(((x.reshape(-1).double() - c.double()[labels.reshape(-1)]) ** 2).sum())


def _best_bounds(xs: np.ndarray, k: int) -> tuple[float, tuple[int, ...]]:
    """Lowest SSE over all partitions of the sorted xs into k non-empty runs, and its inner boundaries."""
    n, best = xs.size, (np.inf, ())
    for cuts in itertools.combinations(range(1, n), k - 1):
        e = (0, *cuts, n)
        sse = sum(float(((xs[a:b] - xs[a:b].mean()) ** 2).sum()) for a, b in zip(e[:-1], e[1:], strict=True))
        best = min(best, (sse, cuts))
    return best


def test_viterbi_hand_computed():
    """Three groups, boundaries one point off each: the joint search puts both on the gaps."""
    xs = np.array([0.0, 1, 2, 10, 11, 12, 20, 21])
    runs = R._Runs(xs, None)
    b = S._viterbi(runs, np.array([0, 2, 5, 8]), np.array([1, 1]))
    assert b.tolist() == [0, 3, 6, 8]


@pytest.mark.parametrize("seed", range(5))
def test_viterbi_is_exact_within_its_windows(seed):
    """With windows covering every point, one joint search is the optimum over all partitions (brute force)."""
    rng = np.random.default_rng(seed)
    xs = np.sort(rng.standard_normal(11) ** 3)
    runs = R._Runs(xs, None)
    for k in (2, 3, 4):
        start = np.linspace(0, xs.size, k + 1).astype(np.int64)
        b = S._viterbi(runs, start, np.ones(k - 1, dtype=np.int64))
        cnt, tot = runs.stats(b)
        opt, cuts = _best_bounds(xs, k)
        assert runs.sum_sq - _fit(tot / cnt, cnt, tot) == pytest.approx(opt, rel=1e-9, abs=1e-12)
        assert tuple(b[1:-1].tolist()) == cuts


@pytest.mark.parametrize("seed", range(3))
def test_viterbi_on_weighted_points_is_the_weighted_optimum(seed):
    """The block means are weighted points: windows covering every point give kmeans_1d_dp's weighted optimum."""
    g = torch.Generator().manual_seed(seed)
    x = torch.sort(torch.randn(12, generator=g, dtype=torch.float64) ** 3).values
    w = torch.rand(12, generator=g, dtype=torch.float64) * 5 + 0.5
    runs = R._Runs(x.numpy(), w.numpy())
    for k in (2, 3, 4):
        b = S._viterbi(runs, np.linspace(0, 12, k + 1).astype(np.int64), np.ones(k - 1, dtype=np.int64))
        cnt, tot = runs.stats(b)
        assert runs.sum_sq - _fit(tot / cnt, cnt, tot) == pytest.approx(kmeans_1d_dp(x, k, w).sse, rel=1e-9)


def test_dp_start_is_the_optimum_when_the_summary_holds_every_point():
    """Fewer points than summary runs: the summary is the data, so its optimum is kmeans_1d_dp's."""
    x = torch.randn(40, generator=torch.Generator().manual_seed(1), dtype=torch.float64) ** 3
    runs = R._Runs(np.sort(x.numpy()), None)
    assert S._summary_edges(runs, S._DP_POINTS).tolist() == list(range(41))
    for k in (2, 4, 7):
        cnt, tot = runs.stats(S._dp_start(runs, k))
        ref = kmeans_1d_dp(x, k)
        np.testing.assert_allclose(tot / cnt, ref.centroids.double().numpy(), rtol=1e-6)


def test_summary_edges_isolate_outliers_and_tails():
    xs = np.sort(np.concatenate([np.linspace(-1, 1, 100_000), [50.0, 60.0]]))
    e = S._summary_edges(R._Runs(xs, None), 128)
    assert e[0] == 0 and e[-1] == xs.size and np.all(np.diff(e) > 0)
    assert {xs.size - 2, xs.size - 1} <= set(e.tolist())  # each outlier a run of its own
    assert 1 in e.tolist()  # the log-spaced tail runs reach single points


@pytest.mark.parametrize("blocked", [True, False])
def test_coarse_runs_have_the_data_sums(blocked, monkeypatch):
    """Block means weighted by block lengths: same total weight and sum; the prefix sums at the coarse points'
    edges and the sum of squares are the data's (so SSEs are); blocks wider than range / (_WIDE k) are split into
    single values."""
    if not blocked:
        monkeypatch.setattr(R, "_BLOCKED_MIN", 10**9)
    rng = np.random.default_rng(0)
    xs = np.sort(np.concatenate([rng.standard_normal(70_000) * 0.02, [3.0, 4.0, 5.0]]).astype(np.float32))
    runs = R._Runs(xs, None)
    crs = runs.coarse(16)
    full = np.concatenate([[0.0], np.cumsum(xs, dtype=np.float64)])
    edges = np.concatenate([[0], np.cumsum(crs.s0[1:] - crs.s0[:-1]).round().astype(np.int64)])
    assert edges[-1] == xs.size
    np.testing.assert_allclose(crs.s1, full[edges], rtol=1e-12, atol=1e-9)
    assert crs.sum_sq == runs.sum_sq
    assert np.all(np.diff(crs.xs) >= 0)
    assert set(crs.xs[-3:].tolist()) == {3.0, 4.0, 5.0}  # the outliers' block is split: weight 1 each
    assert (crs.s0[-3:] - crs.s0[-4:-1]).tolist() == [1.0, 1.0, 1.0]


def test_pd_start_spans_the_data():
    xs = np.sort(np.random.default_rng(2).laplace(size=50_000))
    c = S._pd_start(R._Runs(xs, None), 256)
    assert c.shape == (256,) and np.all(np.diff(c) > 0)
    assert xs[0] <= c[0] and c[-1] <= xs[-1]


def test_respace_equalizes_runs_on_even_data():
    """On evenly spread values a run's distortion mass is proportional to its size, so one re-spacing of any start
    gives k runs of n/k points each (to a point or two: a run's width is (size - 1) / n): centroids at the centres
    of k equal slices."""
    xs = (np.arange(10_000) + 0.5) / 10_000
    runs = R._Runs(xs, None)
    c = S._respace(runs, np.linspace(0, 1, 8) ** 3)  # a start crowded at 0
    np.testing.assert_allclose(c, (np.arange(8) + 0.5) / 8, atol=2e-4)  # the start is off by up to 0.33


def test_respace_lowers_the_pd_start_sse_on_heavy_tails():
    xs = np.sort(np.random.default_rng(4).laplace(size=60_000) ** 3)
    runs = R._Runs(xs, None)
    c0 = S._pd_start(runs, 64)
    c1 = S._respace(runs, c0)
    assert c1.shape == (64,) and np.all(np.diff(c1) >= 0) and xs[0] <= c1[0] and c1[-1] <= xs[-1]
    assert runs.sse(c1, runs.bounds(c1)) < runs.sse(c0, runs.bounds(c0))


@pytest.mark.parametrize("k", [4, 16])
def test_large_input_reaches_the_optimum(k):
    """40 distinct values repeated to 40k points (a large input): the optimum is kmeans_1d_dp's on the distinct
    values weighted by their counts, and the result is a Lloyd fixed point."""
    g = torch.Generator().manual_seed(k)
    values = torch.randn(40, generator=g, dtype=torch.float64) ** 3
    counts = torch.randint(200, 1800, (40,), generator=g)
    x = torch.repeat_interleave(values, counts).float()
    x = x[torch.randperm(x.numel(), generator=g)]
    assert x.numel() >= S._COARSE_MIN
    r = kmeans_1d(x, k, "linear", 100, search="global")
    opt = kmeans_1d_dp(values.float().double(), k, weights=counts.double())
    assert r.sse == pytest.approx(opt.sse, rel=1e-9)
    assert _sse(x, r.centroids, r.labels) == pytest.approx(opt.sse, rel=1e-6)
    assert torch.equal(r.labels, assign(x, r.centroids))
    for j in range(k):
        members = x[r.labels == j].double()
        if members.numel():
            assert r.centroids[j].item() == pytest.approx(members.mean().item(), rel=1e-6)


@pytest.mark.parametrize("k", [4, 16, 256])
def test_large_input_beats_plain_lloyd_and_is_consistent(k):
    """Heavy tails and outliers: lower SSE than plain Lloyd from the linear init, labels at the nearest centroid,
    the reported SSE that of the labels."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60_000, generator=g) ** 3 * 0.02
    x[:4] = torch.tensor([2.0, -1.5, 3.0, 0.9])
    r = kmeans_1d(x, k, "linear", 100, search="global")
    plain = kmeans_1d(x, k, "linear", 100, improve=False)
    assert r.sse <= plain.sse * (1 + 1e-9)
    assert torch.equal(r.labels, assign(x, r.centroids))
    assert r.sse == pytest.approx(_sse(x, r.centroids, r.labels), rel=1e-6)
    assert torch.all(r.centroids[1:] >= r.centroids[:-1])


def test_large_input_with_fewer_distinct_values_than_k():
    x = torch.tensor([0.25, -1.0, 3.0]).repeat(20_000)
    r = kmeans_1d(x, 16, "linear", search="global")
    assert r.sse == pytest.approx(0.0, abs=1e-9)
    assert torch.equal(r.centroids[r.labels], x)


def test_large_input_still_rejects_a_bad_init():
    with pytest.raises(ValueError):
        kmeans_1d(torch.randn(40_000), 4, init="bogus", search="global")
    with pytest.raises(ValueError):
        kmeans_1d(torch.randn(40_000), 4, init=torch.zeros(3))


@pytest.mark.parametrize("k", [3, 4, 5])
def test_compare_pass_labels_match_binary_search(k):
    x = torch.randn(30_000, generator=torch.Generator().manual_seed(k)) * 0.1
    x[::5] = 0.0
    flat, xs = x.numpy(), np.sort(x.numpy())
    c = np.sort(np.random.default_rng(k).standard_normal(k)) * 0.1
    mids = _ceil_to((c[1:] + c[:-1]) / 2, xs.dtype)
    mids[np.abs(mids).argmin()] = 0.0  # a midpoint on a value held many times
    mids.sort()
    assert np.array_equal(_labels(flat, mids), np.searchsorted(mids, flat, side="right"))


def test_rows_restore_torch_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        kmeans_1d_rows(torch.randn(4, 100), 4, improve=True)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_search_lloyd_is_the_default_and_starts_from_init():
    """The scheme's default (search=lloyd) iterates from `init` on large inputs too, as before the global search
    existed; search=global reaches a lower SSE here; an unknown search fails listing the valid ones."""
    x = torch.randn(50_000, generator=torch.Generator().manual_seed(3)) ** 3
    lloyd = kmeans_1d(x, 4, "linear")
    assert torch.equal(kmeans_1d(x, 4, "linear", search="lloyd").centroids, lloyd.centroids)
    assert kmeans_1d(x, 4, "density").iters != lloyd.iters  # it starts from the init (same fixed point here)
    glob = kmeans_1d(x, 4, "linear", search="global")
    assert torch.equal(kmeans_1d(x, 4, "density", search="global").centroids, glob.centroids)  # it does not
    assert glob.sse <= lloyd.sse
    with pytest.raises(ValueError, match="valid: lloyd, global"):
        kmeans_1d(x, 4, search="exact")
