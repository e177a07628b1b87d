"""Tests of qbench.quant.kmeans1d: exactness on small inputs, local optimality, never worse than scikit-learn."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from qbench.quant.kmeans1d import INITS, assign, init_centroids, kmeans_1d, kmeans_1d_dp, kmeans_sklearn


def _sse(x: torch.Tensor, c: torch.Tensor, labels: torch.Tensor, w: torch.Tensor | None = None) -> float:
    err = (x.reshape(-1).double() - c.double()[labels.reshape(-1)]) ** 2
    return float(err.sum() if w is None else (w.reshape(-1).double() * err).sum())


def _brute_force(x: torch.Tensor, k: int, w: torch.Tensor | None = None) -> float:
    """Optimal SSE over all partitions of the sorted values into k contiguous non-empty runs."""
    order = torch.argsort(x)
    xs = x[order].double()
    ws = torch.ones_like(xs) if w is None else w[order].double()
    n, best = xs.numel(), float("inf")
    for cuts in itertools.combinations(range(1, n), k - 1):
        sse = 0.0
        for a, b in zip((0, *cuts), (*cuts, n), strict=True):
            m = float((ws[a:b] * xs[a:b]).sum() / ws[a:b].sum())
            sse += float((ws[a:b] * (xs[a:b] - m) ** 2).sum())
        best = min(best, sse)
    return best


def _data(dist: str, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if dist == "gaussian":
        return torch.randn(n, generator=g) * 0.02
    if dist == "laplace":
        u = torch.rand(n, generator=g) - 0.5
        return -0.02 * torch.sign(u) * torch.log1p(-2 * u.abs())
    if dist == "duplicates":  # few distinct values, heavily repeated
        return torch.randint(-20, 21, (n,), generator=g).float() / 7
    raise ValueError(dist)


def test_tiny_exact_case():
    x = torch.tensor([0.0, 0.0, 1.0, 1.0, 10.0, 10.0])
    r = kmeans_1d(x, 2, "linear")
    assert r.centroids.tolist() == [0.5, 10.0]
    assert r.labels.tolist() == [0, 0, 0, 0, 1, 1]
    assert r.sse == pytest.approx(1.0)
    r3 = kmeans_1d(x, 3, "linear")
    assert r3.centroids.tolist() == [0.0, 1.0, 10.0] and r3.sse == pytest.approx(0.0, abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_dp_matches_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    n = 5 + seed
    x = torch.randn(n, generator=g)
    w = torch.rand(n, generator=g) + 0.1 if seed % 2 else None
    for k in (1, 2, 3, 4):
        r = kmeans_1d_dp(x, k, weights=w)
        opt = _brute_force(x, k, w)
        assert r.sse == pytest.approx(opt, rel=1e-9, abs=1e-12)
        assert _sse(x, r.centroids, r.labels, w) == pytest.approx(opt, rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("init", INITS)
def test_lloyd_result_is_local_optimum_and_near_dp(init):
    x = _data("laplace", 400, 1)
    for k in (2, 4, 16):
        r = kmeans_1d(x, k, init, max_iter=1000)
        c, lab = r.centroids.double(), r.labels
        assert torch.all(c[1:] >= c[:-1])
        assert torch.equal(lab, assign(x, r.centroids))  # each point at its nearest centroid
        for j in range(k):  # each centroid the mean of its members
            members = x[lab == j].double()
            if members.numel():
                assert c[j].item() == pytest.approx(members.mean().item(), rel=1e-6, abs=1e-9)
        assert r.sse == pytest.approx(_sse(x, r.centroids, lab), rel=1e-6)
        assert r.sse >= kmeans_1d_dp(x, k).sse * (1 - 1e-9)
        assert r.sse <= kmeans_1d_dp(x, k).sse * 1.05  # a local optimum, but a good one


CASES = [
    (dist, n, k, init, weighted)
    for dist, n in (("gaussian", 3000), ("laplace", 5000), ("duplicates", 2000))
    for k in (2, 4, 16, 256)
    for init, weighted in (("linear", False), ("density", dist == "laplace"))
    if not (k == 256 and dist == "duplicates" and init == "density")
]


@pytest.mark.parametrize("dist,n,k,init,weighted", CASES)
def test_never_worse_than_sklearn(dist, n, k, init, weighted):
    x = _data(dist, n, seed=k)
    c0 = init_centroids(x.sort().values, k, init)
    w = torch.rand(n, generator=torch.Generator().manual_seed(7)) + 0.5 if weighted else None
    r = kmeans_1d(x, k, c0, max_iter=100, weights=w)
    if weighted:
        from sklearn.cluster import KMeans

        km = KMeans(k, init=c0.numpy()[:, None], n_init=1, max_iter=100, tol=0)
        km.fit(x.double().numpy()[:, None], sample_weight=w.double().numpy())
        c = torch.from_numpy(km.cluster_centers_[:, 0]).sort().values
        ref = _sse(x, c, assign(x.double(), c), w)
    else:
        s = kmeans_sklearn(x, k, c0, max_iter=100)
        ref = _sse(x, s.centroids, s.labels)
    ours = _sse(x, r.centroids, r.labels, w)
    assert ours <= ref * (1 + 1e-7) + 1e-12
    assert r.sse == pytest.approx(ours, rel=1e-5, abs=1e-9)


def test_sklearn_gap_fixed_at_8_bits():
    """The baseline left empty clusters in place: SSE 10.30 vs sklearn's 5.92 on 100k Gaussian values."""
    x = torch.randn(100_000, generator=torch.Generator().manual_seed(0))
    r = kmeans_1d(x, 256, "linear", 100)
    assert r.sse < 5.0
    assert int(torch.bincount(r.labels, minlength=256).eq(0).sum()) == 0


def test_weighted_equals_repeated():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, generator=g)
    reps = torch.randint(1, 4, (300,), generator=g)
    c0 = init_centroids(x.sort().values, 8, "linear")
    rw = kmeans_1d(x, 8, c0, max_iter=500, weights=reps.float())
    rr = kmeans_1d(torch.repeat_interleave(x, reps), 8, c0, max_iter=500)
    torch.testing.assert_close(rw.centroids, rr.centroids, rtol=1e-6, atol=1e-7)
    assert rw.sse == pytest.approx(rr.sse, rel=1e-9)
    assert torch.equal(rw.labels, assign(x, rw.centroids))


@pytest.mark.parametrize("init", INITS)
def test_deterministic_and_each_init(init):
    x = _data("gaussian", 20_000, 5).reshape(100, 200)
    a, b = kmeans_1d(x, 16, init, seed=3), kmeans_1d(x, 16, init, seed=3)
    assert torch.equal(a.centroids, b.centroids) and torch.equal(a.labels, b.labels) and a.sse == b.sse
    assert a.labels.shape == (20_000,) and a.labels.dtype == torch.int32 and a.centroids.dtype == torch.float32
    assert int(a.labels.min()) >= 0 and int(a.labels.max()) < 16
    assert torch.equal(a.labels, assign(x.reshape(-1), a.centroids))


def test_fewer_distinct_values_than_k():
    x = torch.tensor([1.0, 1.0, 2.0, 5.0, 5.0])
    r = kmeans_1d(x, 8, "linear")
    assert r.sse == pytest.approx(0.0, abs=1e-12)
    assert torch.equal(r.centroids[r.labels], x)


@pytest.mark.parametrize("improve", [True, False])
@pytest.mark.parametrize("k", [2, 4])
def test_single_value(k, improve):
    """One value (no split to try: moves index past the end once raised IndexError): every centroid on it, SSE 0;
    the same for a one-column matrix per row."""
    r = kmeans_1d(torch.tensor([0.5]), k, improve=improve)
    assert torch.equal(r.centroids, torch.full((k,), 0.5)) and r.sse == 0.0 and 0 <= int(r.labels[0]) < k
    r = kmeans_1d(torch.tensor([0.5]), k, weights=torch.tensor([2.0]), improve=improve)
    assert torch.equal(r.centroids, torch.full((k,), 0.5)) and r.sse == 0.0
    from qbench.quant.kmeans1d import kmeans_1d_rows

    rr = kmeans_1d_rows(torch.tensor([[0.5], [-1.0]]), k, improve=improve)
    assert torch.equal(rr.centroids, torch.tensor([[0.5], [-1.0]]).expand(2, k)) and rr.sse == 0.0


@pytest.mark.parametrize("search", ["lloyd", "global"])
def test_labels_written_over_the_sorted_copy_leave_the_input_alone(search):
    """kmeans_1d writes its int32 labels into the memory of its sorted copy: the caller's tensor stays unchanged."""
    x = torch.randn(40_000, generator=torch.Generator().manual_seed(5)) * 0.05
    before = x.clone()
    r = kmeans_1d(x, 16, "linear", search=search)
    assert torch.equal(x, before)
    assert r.labels.dtype == torch.int32 and r.labels.data_ptr() != x.data_ptr()
    assert torch.equal(r.labels, assign(x, r.centroids))


def test_rejects_bad_input():
    with pytest.raises(ValueError):
        kmeans_1d(torch.tensor([0.0, float("nan")]), 2)
    with pytest.raises(ValueError):
        kmeans_1d(torch.randn(10), 2, init="bogus")


@pytest.mark.parametrize("chunk", [1 << 15, 4999])  # one chunk | several, the last one short
@pytest.mark.parametrize("case", ["gaussian", "outliers", "duplicates", "zeros", "constant", "float64"])
def test_fast_labels_match_binary_search(case, chunk, monkeypatch):
    """The table-driven labelling of kmeans_1d equals a binary search over the midpoints, for any data, however its
    passes are chunked; written into a given buffer, it returns that buffer."""
    import numpy as np

    from qbench.quant.kmeans1d import labels
    from qbench.quant.kmeans1d.base import _ceil_to
    from qbench.quant.kmeans1d.labels import _labels

    monkeypatch.setattr(labels, "_LABEL_CHUNK", chunk)
    g = torch.Generator().manual_seed(11)
    x = torch.randn(20_000, generator=g) * 0.02
    if case == "outliers":  # a few far values stretch the value range: many boundaries per table cell
        x[:5] = torch.tensor([50.0, -80.0, 1e4, -3e5, 7.0])
    elif case == "duplicates":
        x = torch.randint(-30, 31, (20_000,), generator=g).float() / 7
    elif case == "zeros":
        x[::3] = 0.0
        x[1::7] = -0.0
    elif case == "constant":
        x = torch.full((10_000,), 0.25)
    elif case == "float64":
        x = x.double()
    flat = x.numpy()
    xs = np.sort(flat)
    for k in (2, 16, 256):
        c = np.sort(torch.randn(k, generator=g, dtype=torch.float64).numpy()) * float(x.std() + 0.01)
        mids = _ceil_to((c[1:] + c[:-1]) / 2, xs.dtype)
        ref = np.searchsorted(mids, flat, side="right")
        assert np.array_equal(_labels(flat, mids), ref)
        buf = np.empty(flat.size, dtype=np.int32)
        assert _labels(flat, mids, buf) is buf and np.array_equal(buf, ref)
        r = kmeans_1d(x, k, "linear", max_iter=20)
        assert torch.equal(r.labels, assign(x, r.centroids))
        # the SSE comes from prefix sums (sum x^2 minus the fit): absolute error ~1e-16..1e-14 sum(x^2)
        tol = 1e-5 * _sse(x, r.centroids, r.labels) + 1e-13 * float((x.double() ** 2).sum())
        assert r.sse == pytest.approx(_sse(x, r.centroids, r.labels), abs=tol)


@pytest.mark.parametrize("init", ["linear", "density"])
@pytest.mark.parametrize("k", [2, 4, 16])
def test_rows_equal_plain_lloyd_per_row(k, init):
    from qbench.quant.kmeans1d import kmeans_1d_rows

    x = torch.randn(9, 300, generator=torch.Generator().manual_seed(k)) ** 3  # heavy tails: empty clusters
    x[4] = 1.5  # constant row
    res = kmeans_1d_rows(x, k, init, max_iter=7)  # some rows stop at max_iter, others converge
    sse = 0.0
    for r in range(x.shape[0]):
        ref = kmeans_1d(x[r], k, init, 7, improve=False, accelerate=False)
        assert torch.equal(res.centroids[r], ref.centroids) and torch.equal(res.labels[r], ref.labels), r
        sse += ref.sse
    assert res.sse == pytest.approx(sse, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("k", [2, 16, 32, 64])  # compare passes up to k = 32, a binary search above
def test_row_labels_match_binary_search(k, monkeypatch):
    """Per-row labels = torch.searchsorted(mids, x, right=True), values on a midpoint included, over several row
    chunks with a short last one."""
    import qbench.quant.kmeans1d.labels as L
    from qbench.quant.kmeans1d.rows import _ceil_f32

    monkeypatch.setattr(L, "_LABEL_CHUNK", 1000)  # 3 rows of 300 per chunk: 4 chunks, the last of 1 row
    g = torch.Generator().manual_seed(k)
    x = torch.randn(10, 300, generator=g)
    mids = _ceil_f32(torch.sort(torch.randn(10, k - 1, generator=g, dtype=torch.float64), 1).values)
    x[:, :5] = mids[:, :1]  # ties go right, as in searchsorted(right=True)
    got = L._row_labels(x, mids)
    assert got.dtype == torch.int32 and torch.equal(got.long(), torch.searchsorted(mids, x, right=True))


def test_rows_linspace_init_matches_torch_linspace():
    from qbench.quant.kmeans1d.rows import _linspace_rows

    lo, hi = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64) + 3
    for k in (1, 2, 3, 16, 255, 256):
        got = _linspace_rows(lo, hi, k)
        assert all(torch.equal(got[i], torch.linspace(lo[i], hi[i], k, dtype=torch.float64)) for i in range(50)), k


# --- weighted per-row k-means (SqueezeLLM's Fisher-weighted codebooks) ---


def test_rows_weighted_tiny_hand_computed():
    """x = 0..4 with weight 20 on 4: linear init [0, 4] -> {0,1} {2,3,4} (means 0.5, 85/22) -> {0,1,2} {3,4}
    (means 1, 83/21), a fixed point; unweighted Lloyd stays at {0,1} {2,3,4}."""
    from qbench.quant.kmeans1d import kmeans_1d_rows

    x = torch.tensor([[3.0, 0.0, 4.0, 1.0, 2.0]])
    w = torch.tensor([[1.0, 1.0, 20.0, 1.0, 1.0]])
    r = kmeans_1d_rows(x, 2, weights=w)
    assert r.centroids.tolist() == [[1.0, torch.tensor(83 / 21).float().item()]]
    assert r.labels.tolist() == [[1, 0, 1, 0, 0]]
    assert r.sse == pytest.approx(2 + 20 / 21, rel=1e-12)
    assert kmeans_1d_rows(x, 2).labels.tolist() == [[1, 0, 1, 0, 1]]


@pytest.mark.parametrize("value", [1.0, 2.5])
def test_rows_uniform_weights_equal_unweighted(value):
    from qbench.quant.kmeans1d import kmeans_1d_rows

    x = torch.randn(12, 256, generator=torch.Generator().manual_seed(2)) ** 3
    for k in (4, 16):
        ref = kmeans_1d_rows(x, k)
        r = kmeans_1d_rows(x, k, weights=torch.full_like(x, value))
        assert torch.equal(r.labels, ref.labels) and torch.equal(r.centroids, ref.centroids)
        assert r.sse == pytest.approx(value * ref.sse, rel=1e-9)


@pytest.mark.parametrize("init", ["linear", "density"])
@pytest.mark.parametrize("k", [2, 4, 16])
def test_rows_weighted_equal_kmeans_1d_per_row(k, init):
    from qbench.quant.kmeans1d import kmeans_1d_rows

    g = torch.Generator().manual_seed(10 + k)
    x = torch.randn(10, 300, generator=g) ** 3
    x[4] = 1.5  # constant row
    x[6, ::3] = 0.25  # ties: the stable sort order matters for zero-weight runs
    w = torch.rand(10, 300, generator=g) ** 4  # Fisher-like: spread over orders of magnitude
    w[2, 100:] = 0.0  # zero weights: runs of zero weight keep their centroid
    w[5] = 3.0  # uniform row
    w[7] = 0.0  # all-zero row: clustered unweighted
    res = kmeans_1d_rows(x, k, init, max_iter=9, weights=w)
    assert torch.isfinite(res.centroids).all()
    sse = 0.0
    for r in range(x.shape[0]):
        ref = kmeans_1d(x[r], k, init, 9, weights=w[r], improve=False, accelerate=False)
        assert torch.equal(res.centroids[r], ref.centroids) and torch.equal(res.labels[r], ref.labels), r
        sse += ref.sse
    assert res.sse == pytest.approx(sse, rel=1e-9, abs=1e-12)
    direct = sum(_sse(x[r], res.centroids[r], res.labels[r], w[r]) for r in range(x.shape[0]))
    assert res.sse == pytest.approx(direct, rel=1e-9)


def test_rows_zero_weight_row_is_clustered_unweighted():
    from qbench.quant.kmeans1d import kmeans_1d_rows

    x = torch.randn(3, 500, generator=torch.Generator().manual_seed(4))
    w = torch.rand(3, 500, generator=torch.Generator().manual_seed(5))
    w[1] = 0.0
    r = kmeans_1d_rows(x, 16, weights=w)
    assert torch.isfinite(r.centroids).all() and np.isfinite(r.sse)
    ref = kmeans_1d_rows(x[1:2], 16)
    assert torch.equal(r.centroids[1], ref.centroids[0]) and torch.equal(r.labels[1], ref.labels[0])
    r0 = kmeans_1d_rows(x[1:2], 16, weights=w[1:2])  # every row all zero: unweighted, weighted SSE 0
    assert torch.equal(r0.labels, ref.labels) and r0.sse == 0.0
    with pytest.raises(ValueError):
        kmeans_1d_rows(x, 4, weights=-w)
    with pytest.raises(ValueError):
        kmeans_1d_rows(x, 4, weights=w[:, :10])


@pytest.mark.parametrize("k", [4, 16, 256])
def test_blocked_prefix_sums_match_full(k, monkeypatch):
    """Large inputs keep prefix sums every 32 values (one reduction pass, no n-sized cumsum): same clustering."""
    import qbench.quant.kmeans1d.runs as R

    x = _data("laplace", 70_001, k)  # not a multiple of the block: a partial last block
    blocked = kmeans_1d(x, k, "linear", 60)
    monkeypatch.setattr(R, "_BLOCKED_MIN", 10**9)
    full = kmeans_1d(x, k, "linear", 60)
    torch.testing.assert_close(blocked.centroids, full.centroids, rtol=1e-6, atol=1e-9)
    assert blocked.sse == pytest.approx(full.sse, rel=1e-7)
    assert (blocked.labels != full.labels).float().mean() < 1e-4
    xs = np.sort(x.numpy())
    runs, ref = R._Runs(xs, None), np.concatenate([[0.0], np.cumsum(xs, dtype=np.float64)])
    j = np.array([0, 1, 31, 32, 33, 4095, 70_000, 70_001])
    np.testing.assert_allclose(runs.s1_at(j), ref[j], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(
        runs.s1_window(np.array([0, 69_990]), 20),
        ref[np.minimum([[t] for t in (0, 69_990)] + np.arange(21), 70_001)],
        rtol=1e-12,
        atol=1e-12,
    )


@pytest.mark.parametrize("weighted", [False, True])
def test_rows_improve_lowers_sse_and_ends_at_fixed_points(weighted):
    from qbench.quant.kmeans1d import kmeans_1d_rows

    g = torch.Generator().manual_seed(21)
    x = torch.randn(16, 400, generator=g) ** 3  # heavy tails: linear init leaves clusters (nearly) empty
    x[5] = 0.5  # constant row
    w = torch.rand(16, 400, generator=g) + 0.05 if weighted else None
    plain = kmeans_1d_rows(x, 8, weights=w)
    r = kmeans_1d_rows(x, 8, weights=w, improve=True)
    assert r.sse < plain.sse
    for i in range(16):
        wi = None if w is None else w[i]
        assert (
            _sse(x[i], r.centroids[i], r.labels[i], wi)
            <= _sse(x[i], plain.centroids[i], plain.labels[i], wi) * (1 + 1e-9) + 1e-12
        )
        for j in range(8):  # each non-empty centroid is the (weighted) mean of its members
            mem = r.labels[i] == j
            if mem.any() and i != 5:
                ww = torch.ones(400) if w is None else w[i]
                mean = float((x[i][mem].double() * ww[mem]).sum() / ww[mem].sum())
                assert r.centroids[i, j].item() == pytest.approx(mean, rel=1e-5, abs=1e-9)
