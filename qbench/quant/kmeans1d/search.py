"""kmeans_1d's global search (search="global") of large unweighted inputs from starts of its own (_solve_large):
the optimum of a summary of the data (a dynamic programme) or a Panter-Dite start on block means, then joint
boundary searches (_viterbi) and Lloyd steps."""

from __future__ import annotations

import math

import numpy as np

import qbench.quant.kmeans1d.fast as fast
from qbench.quant.kmeans1d.base import _mean
from qbench.quant.kmeans1d.lloyd import _iterate
from qbench.quant.kmeans1d.runs import _BLOCK, _Runs

_COARSE_MIN = 1 << 15  # unweighted inputs of at least this many values are clustered coarse-to-fine (improve=True)
_DP_K = 16  # up to this many clusters, the coarse solve also starts from the optimum of a summary of the data
_DP_POINTS = 128  # points of that summary (the dynamic programme costs O(k m^2): m^2 = 16k)
_RESPACES = 2  # equal-distortion re-spacings of the Panter-Dite start (k > _DP_K)
_COARSE_ITERS = 12  # Lloyd steps (with moves) on the block means (k > _DP_K)
_LARGE_SEARCHES, _LARGE_HALF = 1, 8  # joint boundary searches on the block means after that loop (k > _DP_K)
_FINE_ITERS = 3  # Lloyd steps on all the points after the block means' solution (k > _DP_K)
_PD_CELLS = 512  # cells of the density estimate of the Panter-Dite start (k > _DP_K)


def _summary_edges(runs: _Runs, m: int) -> np.ndarray:
    """(<= 5m/4+1,) ascending edges (0 ... n) of about m runs of the sorted points: equal-count quantiles merged with
    the edges of equal-width value cells (far outliers keep runs of their own) and log-spaced counts from both ends
    (the sparse tails, which hold few points but much of the SSE, get runs of a few points)."""
    n = runs.n
    q = np.linspace(0, n, m // 2 + 1).astype(np.int64)
    u = runs.search(np.linspace(runs.xs[0], runs.xs[-1], m // 2 + 1)[1:-1])
    g = np.geomspace(1, max(n // 8, 1), m // 8).astype(np.int64)  # log-spaced counts into both tails
    return np.unique(np.concatenate([q, u, g, n - g]))


@np.errstate(over="ignore", invalid="ignore")  # |S1| > 1e154: inf squares and inf - inf sums, as on the numba path
def _dp_start(runs: _Runs, k: int) -> np.ndarray | None:
    """Boundaries (k+1,) of the optimal clustering of a summary of the points into k runs (each summary run moves
    as a whole), or None if the summary has fewer than k runs. The SSE of a clustering is sum_sq - sum S1^2 / S0
    over its clusters, so the dynamic programme maximises sum S1^2 / S0: one (m+1, m+1) table pass per cluster."""
    e = _summary_edges(runs, _DP_POINTS)
    m = e.size - 1
    if m < k:
        return None
    s0 = e.astype(np.float64) if runs.s0 is None else runs.s0[e]
    s1 = runs.s1_at(e)
    if fast.enabled():  # the same programme in numba (fast.dp_tensor), bit for bit
        idx = np.empty(k + 1, np.int64)
        fast.dp_tensor(np.ascontiguousarray(s0), np.ascontiguousarray(s1), k, idx)
        return e[idx]
    d0 = s0[:, None] - s0[None, :]  # (m+1, m+1) [j, i]: weight of the summary runs i..j-1 (rows: contiguous maxima)
    d1 = s1[:, None] - s1[None, :]
    g = np.full(d0.shape, -math.inf)
    np.divide(d1 * d1, d0, out=g, where=d0 > 0)  # g[j, i]: S1^2 / S0 of runs i..j-1 (i < j; -inf: no such run)
    best = g[:, 0].copy()  # best[j]: the best sum of S1^2 / S0 of runs 0..j-1 in l clusters (l = 1 here)
    rows = np.arange(m + 1)
    tot = np.empty_like(g)
    args = []
    for _ in range(k - 1):
        np.add(g, best, out=tot)  # tot[j, i]: runs 0..i-1 in l clusters, then i..j-1 in one
        arg = tot.argmax(1)  # (m+1,) start of the last cluster ending at j
        best = tot[rows, arg]
        args.append(arg)
    b = [m]
    for arg in reversed(args):
        b.append(int(arg[b[-1]]))
    b.append(0)
    return e[np.array(b[::-1])]


_VITERBI_HALF = 16  # candidates per boundary in the joint boundary search: 2 * half + 1
_VITERBI_SHRINK = 8  # grid refinement factor between searches (the new window spans 2 * half / 8 old steps)


def _viterbi(runs: _Runs, b: np.ndarray, stride: np.ndarray, half: int = _VITERBI_HALF) -> np.ndarray:
    """Boundaries (k+1,) maximising sum S1^2 / S0 (the lowest SSE) when every inner boundary b[j] may move to one
    of b[j] + stride[j] * t, t = -half..half, jointly: a dynamic programme over the k-1 boundaries
    (layer j: the candidates of b[j]; step j -> j+1: the cluster between them), exact from the prefix sums."""
    n, k = runs.n, b.size - 1
    t = np.arange(-half, half + 1)
    cand = np.clip(b[1:-1, None] + stride[:, None] * t, 0, n)  # (k-1, C)
    w = cand.astype(np.float64) if runs.s0 is None else runs.s0[cand]
    v = runs.s1_at(cand)
    w_end, v_end = float(n if runs.s0 is None else runs.s0[n]), float(runs.s1_at(np.array([n]))[0])
    if fast.enabled() and k >= 2:  # the same programme in numba (fast.viterbi_tensor), bit for bit
        out = b.copy()
        fast.viterbi_tensor(cand, np.ascontiguousarray(w, np.float64), np.ascontiguousarray(v, np.float64), w_end,
                            v_end, out[1:-1])  # fmt: skip
        return out
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(w[0] > 0, v[0] ** 2 / w[0], -math.inf)  # (C,) the first cluster [0, cand[0])
        d0 = w[1:, None, :] - w[:-1, :, None]  # (k-2, C, C): cluster [cand[j, a], cand[j+1, c])
        d1 = v[1:, None, :] - v[:-1, :, None]
        f = np.where(d0 > 0, d1 * d1 / d0, -math.inf)
        last = np.where(w_end > w[-1], (v_end - v[-1]) ** 2 / (w_end - w[-1]), -math.inf)  # (C,)
    best = first
    args = []
    cols = np.arange(t.size)
    for j in range(k - 2):
        tot = best[:, None] + f[j]
        a = tot.argmax(0)
        args.append(a)
        best = tot[a, cols]
    sel = [int((best + last).argmax())]
    for a in reversed(args):
        sel.append(int(a[sel[-1]]))
    out = b.copy()
    out[1:-1] = cand[np.arange(k - 1), sel[::-1]]
    return out


def _joint_refine(
    runs: _Runs, b: np.ndarray, max_iter: int, half: int = _VITERBI_HALF, lloyd: int | None = None
) -> tuple[np.ndarray, np.ndarray, int]:
    """From boundaries b (k+1,) near the optimum, the best boundaries found by joint searches on ever finer grids
    (_viterbi; each boundary's step starts at 1/half of the shorter run it borders, and shrinks by _VITERBI_SHRINK
    once the boundary ends inside its window; at most max_iter searches), then plain Lloyd steps (at most `lloyd`,
    default max_iter) towards a fixed point: (centroids, boundaries, searches + Lloyd steps)."""
    length = np.diff(b)
    stride = np.maximum(1, np.minimum(length[:-1], length[1:]) // half)  # (k-1,)
    it = 0
    while it < max_iter and b.size > 2:
        it += 1
        nb = _viterbi(runs, b, stride, half)
        inside = np.abs(nb - b)[1:-1] < half * stride
        b = nb
        if inside.all() and (stride == 1).all():
            break
        stride = np.where(inside, np.maximum(1, stride // _VITERBI_SHRINK), stride)
    cnt, tot = runs.stats(b)
    c = tot / np.maximum(cnt, 1)
    c2, b2, it2 = _iterate(runs, c, max(1, max_iter - it if lloyd is None else lloyd), False, False, 0)
    return c2, b2, it + it2


def _pd_start(runs: _Runs, k: int) -> np.ndarray:
    """Centroids (k,) spaced as an optimal high-resolution quantizer (Panter-Dite): with density proportional to
    p^(1/3), p estimated on cells between equal-count quantiles and equal-width value steps (empty cells: 0)."""
    xs = runs.xs
    q = xs[np.linspace(0, runs.n - 1, _PD_CELLS + 1).astype(np.int64)]
    v = np.union1d(q.astype(np.float64), np.linspace(xs[0], xs[-1], _PD_CELLS + 1))  # (c+1,) cell edges
    j = runs.search(v)
    j[-1] = runs.n
    mass = runs.cnt(j[:-1], j[1:]) * np.diff(v) ** 2  # p^(1/3) dx = (count / dx)^(1/3) dx
    g = np.concatenate([[0.0], np.cumsum(np.cbrt(mass))])
    return np.interp((np.arange(k) + 0.5) / k * g[-1], g, v)


def _respace(runs: _Runs, c: np.ndarray) -> np.ndarray:
    """Centroids (k,) after re-spacing the clusters of c to equal distortion: the means of new runs.

    A run of cnt points over a width w at a locally even density has SSE ~ cnt w^2 / 12, and an optimal
    high-resolution quantizer gives every cluster the same SSE (Panter-Dite), so every run should hold the same
    mass u = (cnt w^2)^(1/3). Each current run's u is spread evenly over its points and the cumulative mass is cut
    into k equal parts. This corrects the allocation over the whole range in one step (where Lloyd steps move
    boundaries a few points at a time), and it gives empty gaps and lone outliers no mass (w = 0). Empty new runs
    take the value at their start."""
    k, n, xs = c.size, runs.n, runs.xs
    b = runs.bounds(c)
    cnt, _ = runs.stats(b)
    cnt = cnt.astype(np.float64)
    width = xs[np.maximum(b[1:] - 1, 0)].astype(np.float64) - xs[np.minimum(b[:-1], n - 1)]
    u = np.cbrt(np.where(cnt > 0, cnt * width * width, 0.0))
    g = np.concatenate([[0.0], np.cumsum(u)])
    if not g[-1] > 0:
        return c
    t = np.arange(1, k) * (g[-1] / k)  # (k-1,) cuts of the cumulative mass
    i = np.clip(np.searchsorted(g, t, side="right") - 1, 0, u.size - 1)  # the run holding each cut
    frac = (t - g[i]) / np.maximum(u[i], 1e-300)
    inner = b[i] + np.minimum(frac, 1.0) * (b[i + 1] - b[i])
    nb = np.concatenate([[0], np.sort(inner.astype(np.int64)), [n]])
    cnt, tot = runs.stats(nb)
    return np.sort(_mean(cnt, tot, xs[np.minimum(nb[:-1], n - 1)].astype(np.float64)))


def _solve_large(
    runs: _Runs, k: int, max_iter: int, accelerate: bool, window: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """kmeans_1d's improve=True search on large unweighted inputs: (centroids, run boundaries, iterations).

    k <= _DP_K: the optimum of a summary of the data (_dp_start), then joint boundary searches on all the points
    (_joint_refine): the optimum, or a point next to it (0.00 % above kmeans1d's on MiniLM's tensors).
    Larger k: on the block means (runs.coarse), a Panter-Dite start re-spaced _RESPACES times (_respace), the Lloyd
    loop with moves (at most _COARSE_ITERS steps) and _LARGE_SEARCHES joint boundary searches; then at most
    _FINE_ITERS plain Lloyd steps on all the points (the block means' solution is a few points off a fixed point of
    the data). On MiniLM's tensors at k = 256 this lands within a few tenths of a percent of the SSE of a longer
    schedule (50 steps from the plain Panter-Dite start, 4 searches) in about half the time: the re-spacing fixes
    the start's allocation in the tails at once, where Lloyd steps move boundaries a few points at a time."""
    if k <= _DP_K:
        b = _dp_start(runs, k)
        if b is not None:
            return _joint_refine(runs, b, max_iter)
    crs = runs.coarse(k)
    c = _pd_start(crs, k)
    for _ in range(_RESPACES):
        c = _respace(crs, c)
    c, b, it = _iterate(crs, c, min(max_iter, _COARSE_ITERS), True, accelerate, max(2, window // _BLOCK))
    # moves and Lloyd stop at a local optimum that a joint boundary search still improves at k = 256
    c, b, it3 = _joint_refine(crs, b, _LARGE_SEARCHES, _LARGE_HALF, 0)
    it += it3
    c, b, it2 = _iterate(runs, c, min(max_iter, _FINE_ITERS), False, accelerate, 0)
    return c, b, it + it2
