"""kmeans_1d_rows: many independent 1-D k-means at once, one per row of a matrix (per-row / per-group codebooks)."""

from __future__ import annotations

import math
from contextlib import contextmanager

import numpy as np
import torch

import qbench.quant.kmeans1d.fast as fast
import qbench.quant.kmeans1d.rowsearch as rowsearch
from qbench.quant.kmeans1d.base import INITS, SEARCHES, KMeansResult, init_centroids
from qbench.quant.kmeans1d.labels import _row_labels
from qbench.quant.kmeans1d.rowsearch import search_rows
from qbench.quant.kmeans1d.runs import _sum_sq


def _linspace_rows(lo: torch.Tensor, hi: torch.Tensor, k: int) -> torch.Tensor:
    """(G, k) float64: torch.linspace(lo[g], hi[g], k) for every row g, bit for bit (the vectorised CPU kernel
    rounds some points differently from a closed formula, so it is called per row: ~2 us a row)."""
    out = torch.empty(lo.numel(), k, dtype=torch.float64)
    for g, (a, b) in enumerate(zip(lo.tolist(), hi.tolist(), strict=True)):
        torch.linspace(a, b, k, dtype=torch.float64, out=out[g])
    return out


def init_centroids_rows(xs: torch.Tensor, k: int, init: str, seed: int = 0) -> torch.Tensor:
    """Initial centroids (G, k) float64 of each row of xs (G, m), sorted along rows: init_centroids per row."""
    if init == "linear":
        return _linspace_rows(xs[:, 0].double(), xs[:, -1].double(), k)
    if init == "density":
        m = xs.shape[1]
        pos = (torch.arange(k, dtype=torch.float64) + 0.5) / k * (m - 1)  # (k,)
        i0 = pos.floor().long()
        i1 = (i0 + 1).clamp_max(m - 1)
        v0, v1 = xs[:, i0].double(), xs[:, i1].double()  # (G, k)
        return v0 + (pos - i0) * (v1 - v0)
    if init == "kmeans++":  # sequential D^2 sampling: one row at a time
        return torch.stack([init_centroids(row, k, init, seed) for row in xs])
    raise ValueError(f"unknown k-means init {init!r}; valid: {', '.join(INITS)}")


def _ceil_f32(v: torch.Tensor) -> torch.Tensor:
    """Smallest float32 >= v (float64), so that `x < v` <=> `x < result` for every float32 x (as _ceil_to)."""
    r = v.float()
    return torch.where(r.double() < v, torch.nextafter(r, torch.tensor(math.inf)), r)


def _row_weights(weights: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weights (G, m) float64, validated; the weights the clustering uses, or None for none).

    Rows whose weights are all equal (all zero included) are clustered with weight 1, and with no weights at all
    when every row is so: a positive constant weight does not change a weighted k-means, and weight 1.0 makes the
    weighted arithmetic bit for bit the unweighted one; an all-zero row has no weighted solution and is clustered
    unweighted (no 0/0 means, no NaN)."""
    w = weights.detach()
    if tuple(w.shape) != shape:
        raise ValueError(f"weights have shape {tuple(w.shape)}, expected {shape}")
    w = w.double().cpu()
    if not torch.isfinite(w).all() or (w < 0).any():
        raise ValueError("weights must be finite and non-negative")
    const = (w == w[:, :1]).all(1)
    return w, (None if const.all() else torch.where(const[:, None], torch.ones_like(w), w))


def _move_rows(rows, c, xs, s0, s1, bounds) -> torch.Tensor:
    """One split-merge move in each of `rows` where it lowers the SSE (c updated in place); the rows moved."""
    if xs.shape[1] < 2:  # one value per row: nothing to split
        return rows[:0]
    cen = c[rows]
    g, k = cen.shape
    xr = xs[rows]  # (g, m): the searches need the rows' sorted values; everything else is gathered in place
    b = bounds(xr, cen)
    a, e = b[:, :-1], b[:, 1:]
    m = xr.shape[1]
    ri = rows[:, None]

    def w_at(i: torch.Tensor) -> torch.Tensor:
        return i.double() if s0 is None else s0[ri, i]

    cnt = w_at(e) - w_at(a)
    tot = s1[ri, e] - s1[ri, a]
    mean = torch.where(cnt > 0, tot / torch.where(cnt > 0, cnt, 1.0), cen)
    p = torch.searchsorted(xr, mean.float().contiguous())
    p = torch.maximum(torch.minimum(torch.maximum(p, a + 1), e - 1), a)  # in [a, e]
    pv = p.clamp(1, max(m - 1, 1))
    cl, cr = w_at(p) - w_at(a), w_at(e) - w_at(p)
    sp = s1[ri, p]
    tl, tr = sp - s1[ri, a], s1[ri, e] - sp
    ok = (e - a >= 2) & (cl > 0) & (cr > 0) & (xr.gather(1, pv - 1) < xr.gather(1, pv))
    ml, mr = tl / torch.where(ok, cl, 1.0), tr / torch.where(ok, cr, 1.0)
    gain = torch.where(ok, cl * cr / torch.where(ok, cl + cr, 1.0) * (ml - mr) ** 2, torch.zeros_like(cl))
    both = cnt[:, :-1] + cnt[:, 1:]
    cost = torch.where(
        (cnt[:, :-1] > 0) & (cnt[:, 1:] > 0),
        cnt[:, :-1] * cnt[:, 1:] / torch.where(both > 0, both, 1.0) * (mean[:, :-1] - mean[:, 1:]) ** 2,
        torch.zeros_like(both),
    )  # (g, k-1); merging with an empty (zero-weight) cluster costs nothing
    best_gain, s = gain.max(1)
    j = torch.arange(k - 1)
    cost = torch.where((j == s[:, None]) | (j + 1 == s[:, None]), torch.full_like(cost, math.inf), cost)
    best_cost, t = cost.min(1)
    do = best_gain - best_cost > 1e-9 * best_gain + 1e-300  # a net gain above rounding noise
    if not do.any():
        return rows[:0]
    idx = torch.nonzero(do)[:, 0]
    r = torch.arange(idx.numel())
    ss, tt = s[idx], t[idx]
    cc = cen[idx].clone()
    both_t = both[idx, tt]
    merged = torch.where(
        both_t > 0, (tot[idx, tt] + tot[idx, tt + 1]) / torch.where(both_t > 0, both_t, 1.0), cc[r, tt]
    )
    cc[r, ss] = ml[idx, ss]  # the split cluster's left half
    cc[r, tt] = mr[idx, ss]  # its right half in the slot of the merged pair's first centroid
    cc[r, tt + 1] = merged
    c[rows[idx]] = cc.sort(1).values
    return rows[idx]


def _searched(xs: torch.Tensor, s0, s1: torch.Tensor, k: int, c0: torch.Tensor, bounds=None) -> torch.Tensor:
    """(G, k) float64: the means of the runs of rowsearch.search_rows (from the runs of c0 when `bounds` is given);
    rows where a run has no weight (fewer than k distinct values of positive weight) keep c0."""
    b0 = None if bounds is None else bounds(xs, c0).numpy()
    b = torch.from_numpy(search_rows(xs.numpy(), None if s0 is None else s0.numpy(), s1.numpy(), k, b0))
    w = _diff1(b.double() if s0 is None else s0.gather(1, b))
    v = _diff1(s1.gather(1, b))
    ok = (w > 0).all(1, keepdim=True)
    return torch.where(ok, v / torch.where(w > 0, w, 1.0), c0)


def _moves(c, xs, s0, s1, bounds, lloyd, max_iter: int, rounds: int) -> torch.Tensor:
    """Up to `rounds` rounds of one split-merge move per row, each followed by Lloyd (c updated in place); the rows
    that any move changed."""
    rows, moved = torch.arange(c.shape[0]), []
    for _ in range(rounds):
        rows = _move_rows(rows, c, xs, s0, s1, bounds)
        if rows.numel() == 0:
            break
        moved.append(rows)
        lloyd(rows, max_iter)
    return torch.unique(torch.cat(moved)) if moved else rows[:0]


def _diff1(v: torch.Tensor) -> torch.Tensor:
    return v[:, 1:] - v[:, :-1]


@contextmanager
def _one_thread():
    """Run torch single-threaded: the row loop's ops on (rows, k) arrays gain nothing from the intra-op pool, while
    on a busy machine its threads spin and wait (several times the CPU time of the work itself)."""
    n = torch.get_num_threads()
    if n > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if n > 1:
            torch.set_num_threads(n)


def kmeans_1d_rows(
    x: torch.Tensor,
    k: int,
    init: str = "linear",
    max_iter: int = 100,
    seed: int = 0,
    weights: torch.Tensor | None = None,
    improve: bool = False,
    search: str = "lloyd",
) -> KMeansResult:
    """K-means of every row of x (G, m), all rows at once: centroids (G, k), labels (G, m), sse the total (weighted
    when weights are given). search="lloyd" (default): plain Lloyd from `init` (below); search="global": a
    near-optimal search per row (rowsearch.py; last paragraph).

    Row g's result equals kmeans_1d(x[g], k, init, max_iter, weights=weights[g], improve=False, accelerate=False)
    (bit for bit on float32 data: same float64 prefix sums, same float32 midpoint searches, same stopping rule per
    row), but one torch sort of the whole matrix and batched searches replace G Python calls. Each row is sorted once;
    a Lloyd step is a batched search of the (G, k-1) midpoints in the sorted rows plus prefix-sum differences; rows
    that reach a fixed point leave the loop. Empty clusters keep their centroid (plain Lloyd: no split-merge moves).

    weights: optional non-negative sample weights (G, m) (e.g. SqueezeLLM's Fisher information): each row minimises
    sum(w (x - c)^2) and centroids are weighted means; a cluster whose members all have weight 0 keeps its centroid.
    A row whose weights are all equal is clustered exactly as without weights (as kmeans_1d does), and so is a row
    whose weights are all zero (documented fallback: no weighted solution exists).

    improve=True adds split-merge moves, batched over rows: after Lloyd's fixed point, each row merges the two
    neighbouring clusters whose merge costs least (an empty cluster merges for free) and splits the cluster whose
    split at its mean gains most, when that lowers its SSE (both exact from the prefix sums), then runs Lloyd again;
    rounds repeat while some row improves (at most 4k). Every row still ends at a Lloyd fixed point (or max_iter),
    with an SSE no higher than plain Lloyd's from the same init (the result differs from kmeans_1d's moves).

    search="global": each row starts from the near-optimal run boundaries of rowsearch.search_rows (equal-distortion
    start, joint boundary searches; `init` is validated but unused, except for rows with fewer than k distinct
    values), then plain Lloyd steps to a fixed point. search="lloyd" (default): every row iterates from `init`."""
    if search not in SEARCHES:
        raise ValueError(f"unknown k-means search {search!r}; valid: {', '.join(SEARCHES)}")
    with _one_thread():
        return _rows(x, k, init, max_iter, seed, weights, improve, search)


def _rows(
    x: torch.Tensor,
    k: int,
    init: str,
    max_iter: int,
    seed: int,
    weights: torch.Tensor | None,
    improve: bool,
    search: str = "lloyd",
) -> KMeansResult:
    """kmeans_1d_rows' work (see there)."""
    x = x.detach()
    if x.dim() != 2 or x.numel() == 0:
        raise ValueError(f"kmeans_1d_rows expects a non-empty (rows, values) matrix, got shape {tuple(x.shape)}")
    x = x.float().cpu().contiguous()  # float32 data, as kmeans_1d's float32 path (half types are exact in float32)
    w_sse, w = _row_weights(weights, tuple(x.shape)) if weights is not None else (None, None)
    g_all, m = x.shape
    if search == "global" and k >= 2 and init not in INITS:  # init unused but validated
        raise ValueError(f"unknown k-means init {init!r}; valid: {', '.join(INITS)}")
    quick = search == "global" and k >= 2 and rowsearch.fast_rows()  # the numba kernels, per row (fast.py)
    zero = torch.zeros(g_all, 1, dtype=torch.float64)
    if w is None:
        xs = torch.from_numpy(np.sort(x.numpy(), axis=1))  # (G, m): values only, NumPy's SIMD sort (no indices)
        s0 = None  # run weight = run length
    else:
        xs, order = torch.sort(x, dim=1, stable=True)  # the stable order of kmeans_1d's weighted path
        ws = w.gather(1, order)
        s0 = torch.cat([zero, torch.cumsum(ws, 1)], 1)
        s1 = torch.cat([zero, torch.cumsum(ws * xs.double(), 1)], 1)
        del ws, order
    if not (torch.isfinite(xs[:, 0]).all() and torch.isfinite(xs[:, -1]).all()):  # sorts put NaN and inf at the ends
        raise ValueError("kmeans_1d_rows: input has NaN or infinite values")
    if w is None and quick:
        s1 = torch.empty(g_all, m + 1, dtype=torch.float64)
        fast.prefix_rows(xs.numpy(), s1.numpy())  # the same sums as below, one pass
    elif w is None:
        s1 = torch.cat([zero, torch.cumsum(xs.double(), 1)], 1)  # (G, m+1) prefix sums, float64, sequential as NumPy's
    rounds = 4 * k if (improve or search == "global") and k >= 3 else 0  # split-merge rounds
    if quick:  # every step below, per row; the fallback start of rows the search cannot split: density
        c = torch.empty(g_all, k, dtype=torch.float64)
        fast.density_rows(xs.numpy(), c.numpy())
        b_fin = rowsearch.global_rows_fast(xs.numpy(), None if s0 is None else s0.numpy(), s1.numpy(), c.numpy(),
                                           max_iter, rounds)  # fmt: skip
        return _result(x, xs, s1, c, torch.from_numpy(b_fin), w_sse, max_iter, fast_labels=True)
    # the fallback start of rows the global search cannot split: density
    c = init_centroids_rows(xs, k, "density" if search == "global" and k >= 2 else init, seed)  # (G, k) float64
    if search == "global" and k >= 2:
        c = _searched(xs, s0, s1, k, c)

    def bounds(xw: torch.Tensor, cen: torch.Tensor) -> torch.Tensor:
        """(A, k+1) run starts of the centroids cen (A, k) in the sorted rows xw (A, m) (nearest, ties right)."""
        mids = _ceil_f32((cen[:, 1:] + cen[:, :-1]) * 0.5)  # (A, k-1)
        inner = torch.searchsorted(xw, mids)  # number of values strictly below each midpoint
        a = xw.shape[0]
        return torch.cat([inner.new_zeros(a, 1), inner, inner.new_full((a, 1), m)], 1)

    def means(rows: torch.Tensor, b: torch.Tensor, cen: torch.Tensor) -> torch.Tensor:
        """Each run's (weighted) mean (A, k); runs of zero weight (empty ones included) keep their centroid."""
        flat = rows[:, None] * (m + 1) + b  # (A, k+1) flat indices: gathers in place, no copies of whole rows
        cnt = (b[:, 1:] - b[:, :-1]).double() if s0 is None else _diff1(torch.take(s0, flat))
        return torch.where(cnt > 0, _diff1(torch.take(s1, flat)) / torch.where(cnt > 0, cnt, 1.0), cen)

    def lloyd(work: torch.Tensor, iters: int) -> None:
        """Plain Lloyd on rows `work` (c updated in place) until each row's fixed point or `iters` steps.

        Rows at their fixed point stay in the working set until it shrinks by a quarter (then it is compacted, one
        copy of its sorted rows): a Lloyd step leaves a fixed point bit for bit unchanged, and copying the rows
        still moving at every step would cost more than the steps."""
        xw = xs[work]  # (A, m)
        b_w = bounds(xw, c[work])
        live = torch.ones(work.numel(), dtype=torch.bool)  # rows not yet at a fixed point
        for it in range(1, iters + 1):
            mean = means(work, b_w, c[work])
            b_mean = bounds(xw, mean)
            c[work] = mean
            live = (b_mean != b_w).any(1)
            if it == iters:  # not converged: one more update step (as kmeans_1d), then the final assignment
                rows = work[live]
                if rows.numel():
                    c[rows] = means(rows, b_mean[live], c[rows])
            n_live = int(live.sum())
            if n_live == 0:
                break
            if n_live <= 0.75 * work.numel():
                work, xw, b_mean = work[live], xw[live], b_mean[live]
            b_w = b_mean

    lloyd(torch.arange(g_all), max_iter)
    moved = _moves(c, xs, s0, s1, bounds, lloyd, max_iter, rounds)
    if search == "global" and k >= 2 and moved.numel():  # the rows the moves changed: searched again from there
        c[moved] = _searched(xs[moved], None if s0 is None else s0[moved], s1[moved], k, c[moved], bounds)
        lloyd(moved, max_iter)
    return _result(x, xs, s1, c, bounds(xs, c) if w_sse is None else None, w_sse, max_iter)


def _result(x, xs, s1, c: torch.Tensor, b: torch.Tensor | None, w_sse, max_iter: int, fast_labels: bool = False):
    """KMeansResult of the centroids c (G, k) float64 of the rows of x (G, m) (xs sorted, s1 prefix sums): labels in
    input order, SSE from the final runs b (G, k+1) (unweighted) or from the caller's weights w_sse."""
    g_all, m = x.shape
    if fast_labels:  # the numba kernel: the same counts as _row_labels
        labels = torch.from_numpy(np.empty((g_all, m), np.int32))
        fast.split_rows(fast.row_labels, g_all, x.numpy(), c.numpy(), labels.numpy())
    else:
        mids = _ceil_f32((c[:, 1:] + c[:, :-1]) * 0.5)  # (G, k-1)
        labels = _row_labels(x, mids)  # (G, m): number of midpoints <= each value
    if w_sse is None:  # sum x^2 minus the fit, from the prefix sums at the final runs (no data-sized temporaries)
        tot = _diff1(torch.take(s1, torch.arange(g_all)[:, None] * (m + 1) + b))  # (G, k) run sums
        sse = max(_sum_sq(x.numpy().reshape(-1), None) - float((c * (2 * tot - c * _diff1(b))).sum()), 0.0)
    else:  # with the caller's weights
        sse = float((w_sse * (x.double() - c.gather(1, labels.long())) ** 2).sum())
    return KMeansResult(c.float(), labels, sse, max_iter)
