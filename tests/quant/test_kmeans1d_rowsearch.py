"""Tests of kmeans_1d_rows(search="global") (qbench.quant.kmeans1d.rowsearch): near the exact per-row optimum,
issue 27's reproducer, no empty clusters, nearest-centroid labels, invariances."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qbench.quant.kmeans1d import kmeans_1d_dp, kmeans_1d_rows


def _row_sse(x: torch.Tensor, c: torch.Tensor, labels: torch.Tensor, w: torch.Tensor | None = None) -> torch.Tensor:
    d = (x.double() - c.double().gather(1, labels.long())) ** 2
    return (d if w is None else d * w).sum(1)


def test_reproducer_uses_every_level_at_the_optimum():
    """Issue 27: 63 N(0, 1) values and one at 12.0, 16 levels. Plain Lloyd from the linear init leaves levels
    empty far above the optimum; the global search uses all 16 at the optimum."""
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(0))
    x[0, -1] = 12.0
    opt = kmeans_1d_dp(x[0], 16).sse
    old = kmeans_1d_rows(x, 16)
    assert old.labels.unique().numel() < 16 and old.sse > 5 * opt  # the reported defect, still in search=lloyd
    r = kmeans_1d_rows(x, 16, search="global")
    assert r.labels.unique().numel() == 16
    assert r.sse == pytest.approx(opt, rel=1e-9)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("k", [4, 8, 16])
def test_near_the_exact_optimum_per_row(k, weighted):
    """Laplace rows of 256 values at different scales, one with an outlier (with and without squared-gradient-like
    weights): mean SSE within 3 % of each row's exact optimum (kmeans_1d_dp), every row within 20 %, and a total
    below plain Lloyd's; the reported SSE is the weighted sum, labels are the nearest centroid, no cluster is empty.
    Measured mean gaps (unweighted / weighted): k=4 0.00 / 0.00 %, k=8 1.58 / 0.13 %, k=16 0.13 / 2.37 %, so issue
    27's 1 % target is missed on these synthetic rows at k=8 unweighted (one row 18 % above) and k=16 weighted."""
    g = torch.Generator().manual_seed(k + 100 * weighted)
    e = torch.rand(12, 256, generator=g).clamp_min(1e-7)
    sign = torch.sign(torch.rand(12, 256, generator=g) - 0.5)
    x = torch.log(e) * sign * torch.exp(torch.randn(12, 1, generator=g))
    x[1, 0] = 40.0  # an outlier
    w = torch.randn(12, 256, generator=g, dtype=torch.float64) * torch.exp(torch.randn(1, 256, generator=g).double())
    w = w**2 if weighted else None
    r = kmeans_1d_rows(x, k, search="global", weights=w)
    opt = torch.tensor([kmeans_1d_dp(x[i], k, None if w is None else w[i]).sse for i in range(12)], dtype=torch.float64)
    sse = _row_sse(x, r.centroids, r.labels, w)
    gap = sse / opt - 1
    assert float(gap.mean()) <= 0.03 and float(gap.max()) <= 0.2, gap
    plain = kmeans_1d_rows(x, k, weights=w)
    assert float(sse.sum()) < float(_row_sse(x, plain.centroids, plain.labels, w).sum())
    assert r.sse == pytest.approx(float(sse.sum()), rel=1e-9)
    mids = (r.centroids[:, 1:] + r.centroids[:, :-1]) / 2
    assert torch.equal(r.labels.long(), torch.searchsorted(mids.contiguous(), x, right=True))
    assert all(r.labels[i].unique().numel() == k for i in range(12))


def test_no_worse_than_plain_lloyd_and_below_moves_in_total():
    """On every row, the global search's SSE is no higher than plain Lloyd's from the linear init (the per-row solver
    before it); its total is below that of Lloyd with split-merge moves (a few rows can end higher than there)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(40, 200, generator=g) ** 3
    new = kmeans_1d_rows(x, 8, search="global")
    a = _row_sse(x, new.centroids, new.labels)
    plain, moves = kmeans_1d_rows(x, 8), kmeans_1d_rows(x, 8, improve=True)
    assert bool((a <= _row_sse(x, plain.centroids, plain.labels) * (1 + 1e-9)).all())
    assert float(a.sum()) < float(_row_sse(x, moves.centroids, moves.labels).sum())


def test_invariances():
    """Rows are solved independently (a row alone = the same row in a batch, past the 256-row chunk); the order of
    values within a row does not matter; shifting and scaling by powers of two moves the centroids alike."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(300, 50, generator=g) ** 3
    full = kmeans_1d_rows(x, 8, search="global")
    for i in (0, 137, 299):
        one = kmeans_1d_rows(x[i : i + 1], 8, search="global")
        assert torch.equal(one.centroids[0], full.centroids[i]) and torch.equal(one.labels[0], full.labels[i])
    perm = torch.randperm(50, generator=g)
    p = kmeans_1d_rows(x[:, perm], 8, search="global")
    assert torch.equal(p.centroids, full.centroids) and torch.equal(p.labels, full.labels[:, perm])
    s = kmeans_1d_rows(4 * x[:20] - 2, 8, search="global")  # exact in float32 for these values' exponents
    torch.testing.assert_close(s.centroids, 4 * full.centroids[:20] - 2, rtol=1e-5, atol=1e-5)


def test_few_distinct_values_and_constant_rows():
    """Rows with fewer distinct values than k (a constant row included) are clustered exactly (SSE 0)."""
    x = torch.tensor([[1.0, 1.0, 2.0, 5.0, 5.0, 2.0], [3.0] * 6, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]])
    r = kmeans_1d_rows(x, 8, search="global")
    assert r.sse == pytest.approx(0.0, abs=1e-12)
    assert torch.equal(r.centroids.gather(1, r.labels.long()), x)
    with pytest.raises(ValueError, match="search"):
        kmeans_1d_rows(x, 4, search="exact")
    assert np.isfinite(kmeans_1d_rows(x, 2, search="global", weights=torch.rand(3, 6)).sse)
