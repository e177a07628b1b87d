"""The `fast` extra (qbench/quant/kmeans1d/fast.py, numba) against the NumPy reference: kmeans_1d_rows(search="global")
gives the same centroids, labels and SSE bit for bit with and without it (the whole per-row pipeline: prefix sums,
starts, searches, Lloyd, split-merge moves, labels), each kernel equals its NumPy/torch step, and QBENCH_NUMBA=0
turns it off."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qbench.quant.kmeans1d import fast, kmeans_1d_rows, rows, rowsearch
from qbench.quant.kmeans1d.labels import _row_labels

pytest.importorskip("numba")


def _both(monkeypatch, x: torch.Tensor, k: int, w: torch.Tensor | None = None, max_iter: int = 100):
    """(numba result, NumPy result) of kmeans_1d_rows(x, k, search="global", weights=w)."""
    monkeypatch.setenv("QBENCH_NUMBA", "1")
    assert fast.enabled()
    a = kmeans_1d_rows(x, k, max_iter=max_iter, search="global", weights=w)
    monkeypatch.setenv("QBENCH_NUMBA", "0")
    assert not fast.enabled()
    b = kmeans_1d_rows(x, k, max_iter=max_iter, search="global", weights=w)
    return a, b


def _assert_same(a, b) -> None:
    assert torch.equal(a.centroids, b.centroids)
    assert torch.equal(a.labels, b.labels)
    assert a.sse == b.sse


def _hand_made(m: int = 64) -> torch.Tensor:
    """(8, m) rows: Gaussian, one far outlier each side, many ties (3 distinct values), all equal, two distinct
    values, a constant row with one outlier, a sorted ramp, heavy (Laplace) tails."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, m, generator=g)
    x[1, 3], x[1, 7] = 40.0, -25.0
    x[2] = torch.randint(0, 3, (m,), generator=g).float() * 0.5
    x[3] = 0.25
    x[4] = torch.where(torch.rand(m, generator=g) < 0.3, 1.0, -1.0)
    x[5] = 0.0
    x[5, 11] = 3.0
    x[6] = torch.linspace(-1, 1, m)
    x[7] = torch.log(torch.rand(m, generator=g).clamp_min(1e-7)) * torch.sign(torch.randn(m, generator=g))
    return x


@pytest.mark.parametrize("k", [2, 3, 4, 5, 16, 17, 40])
def test_hand_made_rows(monkeypatch, k):
    """Outliers, ties, rows with fewer distinct values than k, all-equal rows: same result on both paths."""
    _assert_same(*_both(monkeypatch, _hand_made(), k))


@pytest.mark.parametrize("k", [3, 4, 16])
def test_weighted_rows(monkeypatch, k):
    """Fisher-like weights (squared Gaussians at per-column scales), zero weights (a run of them, most of a row), an
    all-zero weight row, a constant-weight row."""
    x = _hand_made()
    g = torch.Generator().manual_seed(1)
    w = (torch.randn(8, 64, generator=g, dtype=torch.float64) * torch.exp(torch.randn(1, 64, generator=g))) ** 2
    w[0, :10] = 0.0
    w[3] = 0.0
    w[6] = 2.5
    w[7, 5:] = 0.0
    _assert_same(*_both(monkeypatch, x, k, w))


@pytest.mark.parametrize("k", [4, 8, 16])
def test_random_matrices(monkeypatch, k):
    """Random matrices (Gaussian rows at different scales, some rounded to few levels like de-quantized weights)."""
    g = torch.Generator().manual_seed(k)
    x = torch.randn(48, 200, generator=g) * torch.exp(torch.randn(48, 1, generator=g))
    x[::3] = torch.round(x[::3] * 4) / 4
    _assert_same(*_both(monkeypatch, x, k))


def test_threads(monkeypatch):
    """QBENCH_NUMBA_THREADS splits the rows over threads: the same result (weighted and not), blocks of 1+ rows."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 80, generator=g)
    w = torch.rand(7, 80, generator=g, dtype=torch.float64)
    for n in ["3", "16"]:
        monkeypatch.setenv("QBENCH_NUMBA_THREADS", n)
        _assert_same(*_both(monkeypatch, x, 8))
        _assert_same(*_both(monkeypatch, x, 8, w))


def test_edge_shapes_and_values(monkeypatch):
    """One or two values per row, fewer values than k, the iteration limit hit (max_iter 0..3), +-0.0 ties, values
    whose float32 spread overflows when squared (the start's float64 fallback), k above the compare-pass labels."""
    g = torch.Generator().manual_seed(2)
    for shape, k in [((5, 1), 2), ((5, 1), 4), ((5, 2), 3), ((6, 12), 16)]:
        _assert_same(*_both(monkeypatch, torch.randn(shape, generator=g), k))
    x = torch.randn(6, 100, generator=g)
    for it in range(4):
        _assert_same(*_both(monkeypatch, x, 8, max_iter=it))
    _assert_same(*_both(monkeypatch, torch.tensor([[0.0, -0.0, 1.0, -1.0] * 10] * 3), 3))
    x = torch.randn(4, 50, generator=g)
    x[0, 0], x[1, 0], x[1, 1], x[2, 3] = 3e19, -3e19, 3e19, 1e30
    _assert_same(*_both(monkeypatch, x, 4))
    _assert_same(*_both(monkeypatch, torch.randn(4, 300, generator=g), 64))


def test_step_kernels_equal_reference():
    """Prefix sums, density start, re-spaced start and labels: each kernel equals the NumPy/torch step it replaces."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((12, 97)) * np.exp(rng.standard_normal((12, 1)))).astype(np.float32)
    x[3] = 0.5  # all equal
    x[4, :90] = 0.0
    x[4, :45] = -0.0  # +-0.0 ties
    xs = np.sort(x, 1)
    s1 = np.empty((12, 98))
    fast.prefix_rows(xs, s1)
    ref = torch.cat([torch.zeros(12, 1, dtype=torch.float64), torch.cumsum(torch.from_numpy(xs).double(), 1)], 1)
    np.testing.assert_array_equal(s1, ref.numpy())
    for k in [2, 3, 16, 40]:
        c = np.empty((12, k))
        fast.density_rows(xs, c)
        np.testing.assert_array_equal(c, rows.init_centroids_rows(torch.from_numpy(xs), k, "density").numpy())
        w = rng.random((12, 97)) ** 3
        w[5, :50] = 0.0
        s0 = np.concatenate([np.zeros((12, 1)), np.cumsum(w, 1)], 1)
        for s0r, unit in [(None, True), (s0, False)]:
            b = rowsearch._start_fast(xs, np.zeros((1, 1)) if unit else s0r, unit, k)
            np.testing.assert_array_equal(b, rowsearch._starts(xs, s0r, k)[0])
        c = np.sort(rng.standard_normal((12, k)) * 2, 1)
        c[0, :2] = 0.0  # a midpoint exactly at 0.0 (+-0.0 in the data)
        lab = np.empty(x.shape, np.int32)
        fast.row_labels(x, c, lab)
        mids = rows._ceil_f32((torch.from_numpy(c[:, 1:]) + torch.from_numpy(c[:, :-1])) * 0.5)
        np.testing.assert_array_equal(lab, _row_labels(torch.from_numpy(x), mids).numpy())


def test_descend_kernel_equals_numpy(monkeypatch):
    """The kernel's boundaries and fits equal rowsearch._descend's bit for bit (unweighted and weighted, k = 2..32,
    rows shorter than k included)."""
    monkeypatch.setenv("QBENCH_NUMBA", "1")
    rng = np.random.default_rng(0)
    for trial, (m, k) in enumerate([(40, 2), (100, 3), (200, 8), (150, 16), (300, 32), (12, 16)]):
        x = (rng.standard_normal((20, m)) * np.exp(rng.standard_normal((20, 1)))).astype(np.float32)
        xs = np.sort(x, 1)
        zero = np.zeros((20, 1))
        s0 = None
        if trial % 2:
            w = rng.random((20, m)) ** 3
            s0 = np.concatenate([zero, np.cumsum(w, 1)], 1)
            s1 = np.concatenate([zero, np.cumsum(w * xs, 1)], 1)
        else:
            s1 = np.concatenate([zero, np.cumsum(xs.astype(np.float64), 1)], 1)
        b = rowsearch._starts(xs, s0, k)[0]
        b_ref, f_ref = rowsearch._descend(s0, s1, b.copy(), m)
        b_fast, f_fast = rowsearch._descend_any(s0, s1, b.copy(), m)
        np.testing.assert_array_equal(b_fast, b_ref)
        np.testing.assert_array_equal(f_fast, f_ref)


def test_pairwise_sum_matches_numpy():
    """fast._pairwise adds as ndarray.sum does (pairwise blocks of 8 accumulators, halves above 128 values)."""
    rng = np.random.default_rng(0)
    for n in [1, 5, 8, 9, 17, 127, 128, 129, 300, 1000, 4099]:
        a = rng.standard_normal(n) * np.exp(5 * rng.standard_normal(n))
        assert 0.0 + fast._pairwise(a, 0, n) == a[None].sum(1)[0]


def test_env_switch(monkeypatch):
    """QBENCH_NUMBA=0 keeps the NumPy path (the kernel is not called); any other value or none uses numba."""
    calls = []
    real = fast.global_rows

    def spy(*args):
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(fast, "global_rows", spy)
    x = _hand_made()
    monkeypatch.setenv("QBENCH_NUMBA", "0")
    kmeans_1d_rows(x, 4, search="global")
    assert not calls
    monkeypatch.delenv("QBENCH_NUMBA")
    kmeans_1d_rows(x, 4, search="global")
    assert calls


def test_tensor_programmes_equal_numpy(monkeypatch):
    """Per tensor: search._viterbi's and _dp_start's programmes in numba equal NumPy's (k = 2..40, candidates past
    the ends, ties from repeated values), and kmeans_1d(search="global") gives the same result on both paths."""
    from qbench.quant.kmeans1d import kmeans_1d, search
    from qbench.quant.kmeans1d.runs import _Runs

    rng = np.random.default_rng(4)
    x = (rng.standard_normal(40_000) * np.exp(rng.standard_normal(40_000) / 2)).astype(np.float32)
    x[:5000] = np.round(x[:5000] * 2) / 2  # ties
    runs = _Runs(np.sort(x), None)
    for k in [2, 3, 8, 16, 40]:
        b = np.rint(np.arange(k + 1) * (runs.n / k)).astype(np.int64)
        stride = rng.integers(1, 300, k - 1)
        got = {}
        for flag in "10":
            monkeypatch.setenv("QBENCH_NUMBA", flag)
            got[flag] = (search._viterbi(runs, b, stride), search._viterbi(runs, b, stride, 4))
            got[flag] += (search._dp_start(runs, k),)
        for a, r in zip(got["1"], got["0"], strict=True):
            np.testing.assert_array_equal(a, r)
    huge = _Runs(np.sort(rng.standard_normal(5000)) * 1e155, None)  # S1^2 overflows: inf fits, NaN sums
    for k in [3, 8]:
        got = {}
        for flag in "10":
            monkeypatch.setenv("QBENCH_NUMBA", flag)
            got[flag] = search._dp_start(huge, k)
        np.testing.assert_array_equal(got["1"], got["0"])
    for k in [4, 16, 256]:
        res = []
        for flag in "10":
            monkeypatch.setenv("QBENCH_NUMBA", flag)
            res.append(kmeans_1d(torch.from_numpy(x), k, search="global"))
        _assert_same(*res)


def test_tensor_labels_equal_numpy(monkeypatch):
    """labels._labels (per tensor) in one compiled pass equals the chunked NumPy passes: compare passes (k <= 4),
    the table with and without in-cell thresholds, a midpoint at +0.0 with +-0.0 values, k = 256."""
    from qbench.quant.kmeans1d.labels import _labels

    rng = np.random.default_rng(6)
    x = rng.standard_normal(50_000).astype(np.float32)
    x[:100], x[100:200] = 0.0, -0.0
    cases = [np.float32([0.0]), np.float32([-1.0, 0.0, 0.5]), np.float32([1.0, 2.0, 4.0, 8.0, 16.0])]
    cases += [np.sort(rng.standard_normal(k - 1)).astype(np.float32) for k in (16, 256)]
    cases += [np.sort(np.append(rng.standard_normal(14), 0.0)).astype(np.float32)]
    for mids in cases:
        got = {}
        for flag in "10":
            monkeypatch.setenv("QBENCH_NUMBA", flag)
            got[flag] = _labels(x, mids).copy()
        np.testing.assert_array_equal(got["1"], got["0"])
        np.testing.assert_array_equal(got["0"], np.searchsorted(mids, x, side="right"))


def test_blocked_prefix_sums_equal_numpy(monkeypatch):
    """runs._Runs.s1_at on blocked prefix sums: numba's block sums equal NumPy's (float32 and float64 values, any
    index shape, the end index)."""
    from qbench.quant.kmeans1d.runs import _Runs

    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.float64):
        n = 40_000
        runs = _Runs(np.sort((rng.standard_normal(n) * np.exp(3 * rng.standard_normal(n))).astype(dtype)), None)
        for j in [rng.integers(0, n + 1, (15, 33)), np.arange(n - 70, n + 1), np.array(n), np.array([0, 1, 31, 32])]:
            monkeypatch.setenv("QBENCH_NUMBA", "1")
            got = runs.s1_at(j)
            monkeypatch.setenv("QBENCH_NUMBA", "0")
            ref = runs.s1_at(j)
            assert np.shape(got) == np.shape(ref)
            np.testing.assert_array_equal(got, ref)
