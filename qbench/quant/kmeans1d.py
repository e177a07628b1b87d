"""Exact-step 1-D k-means for weight tensors.

Weights are scalars, so after one sort every cluster is a contiguous run of the sorted values and a Lloyd
iteration needs only k boundary searches and prefix sums: O(k log n) per iteration after the O(n log n) sort.

On top of plain Lloyd, every iteration
- relocates empty clusters by splitting the non-empty clusters whose split at their mean lowers the SSE most, and
- applies split-merge moves: merge two neighbouring clusters and split another one when that lowers the SSE.
Both are evaluated exactly from the prefix sums (the SSE of a run is sum(w x^2) - S1^2 / S0), so every step
lowers the SSE and the result is a Lloyd fixed point (each centroid the mean of its members, each point at its
nearest centroid) whenever the loop converges within max_iter.

`kmeans_1d_dp` is the exact optimum (dynamic programming over the sorted values, O(k n^2)) for small inputs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

INITS = ("linear", "density", "kmeans++")


@dataclass
class KMeansResult:
    centroids: torch.Tensor  # (k,) float32, ascending
    labels: torch.Tensor  # (n,) int64, index into centroids, same order as the input
    sse: float  # weighted sum of squared errors
    iters: int  # Lloyd iterations run (both passes of kmeans_1d together)


def init_centroids(xs: torch.Tensor, k: int, init: str, seed: int = 0) -> torch.Tensor:
    """Initial centroids (k,) float64 from sorted values xs: evenly spaced ('linear'), quantiles ('density'),
    or k-means++ seeding on a subsample ('kmeans++')."""
    lo, hi = xs[0].item(), xs[-1].item()
    if init == "linear":  # Deep Compression's linear init: evenly spaced between min and max
        return torch.linspace(lo, hi, k, dtype=torch.float64)
    if init == "density":  # equal-mass quantiles of the empirical CDF (linear interpolation, as torch.quantile)
        pos = (torch.arange(k, dtype=torch.float64) + 0.5) / k * (xs.numel() - 1)
        i0 = pos.floor().long()
        i1 = (i0 + 1).clamp_max(xs.numel() - 1)
        v0, v1 = xs[i0].double(), xs[i1].double()
        return v0 + (pos - i0) * (v1 - v0)
    if init == "kmeans++":
        return _kmeanspp(_subsample(xs, 1 << 16, seed), k, seed)
    raise ValueError(f"unknown k-means init {init!r}; valid: {', '.join(INITS)}")


def _subsample(xs: torch.Tensor, m: int, seed: int) -> torch.Tensor:
    if xs.numel() <= m:
        return xs.double()
    g = torch.Generator().manual_seed(seed)
    return xs[torch.randint(xs.numel(), (m,), generator=g)].double()


def _kmeanspp(x: torch.Tensor, k: int, seed: int) -> torch.Tensor:
    """k-means++ seeding (D^2 sampling by inverse CDF: NumPy is ~100x faster than torch.multinomial here)."""
    rng = np.random.default_rng(seed)
    xv = x.numpy()
    c = [float(xv[rng.integers(xv.size)])]
    d2 = (xv - c[0]) ** 2
    for _ in range(1, k):
        cdf = np.cumsum(d2)
        i = int(np.searchsorted(cdf, rng.random() * cdf[-1], side="right")) if cdf[-1] > 0 else rng.integers(xv.size)
        c.append(float(xv[min(i, xv.size - 1)]))
        np.minimum(d2, (xv - c[-1]) ** 2, out=d2)
    return torch.tensor(sorted(c), dtype=torch.float64)


def _sorted_values(flat: torch.Tensor) -> torch.Tensor:
    """Ascending values of a 1-D CPU tensor. NumPy's values-only sort (SIMD) is many times faster than
    torch.sort, which always also computes the permutation."""
    if flat.device.type == "cpu" and flat.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(flat.numpy()))
    return torch.sort(flat).values


class _Runs:
    """Sorted values with float64 prefix sums; statistics of contiguous runs [a, b) in O(1)."""

    def __init__(self, xs: torch.Tensor, w: torch.Tensor | None):
        self.xs, self.n = xs, xs.numel()
        zero = torch.zeros(1, dtype=torch.float64)
        self.s0 = None if w is None else torch.cat([zero, torch.cumsum(w, 0)])  # None: s0[j] = j
        self.s1 = torch.cat([zero, torch.cumsum(xs if w is None else w * xs, 0, dtype=torch.float64)])
        x64 = xs.double()
        self.sum_sq = float(torch.dot(x64, x64) if w is None else torch.dot(w * x64, x64))

    def cnt(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (b - a).double() if self.s0 is None else self.s0[b] - self.s0[a]

    def tot(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.s1[b] - self.s1[a]

    def sse(self, c: torch.Tensor, b: torch.Tensor) -> float:
        """SSE of centroids c over runs b: per run sum(w (x - c)^2) = sum(w x^2) - 2 c S1 + c^2 S0, for any c."""
        cnt, tot = self.cnt(b[:-1], b[1:]), self.tot(b[:-1], b[1:])
        return self.sum_sq - float((2 * c * tot - c * c * cnt).sum())

    def search(self, values: torch.Tensor) -> torch.Tensor:
        """Number of sorted values strictly below each of `values` (float64), exact for float32 data."""
        # NumPy here: torch.searchsorted of a few hundred queries costs ~8 ms on 2 OpenMP threads (~20 us in NumPy)
        return torch.from_numpy(np.searchsorted(self.xs.numpy(), _ceil_to(values, self.xs.dtype).numpy()))

    def bounds(self, c: torch.Tensor) -> torch.Tensor:
        """(k+1,) start offsets of each centroid's run: points go to the nearest centroid, ties to the right."""
        inner = self.search((c[1:] + c[:-1]) / 2)
        return torch.cat([inner.new_zeros(1), inner, inner.new_full((1,), self.n)])


def _ceil_to(v: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Smallest value of `dtype` >= v, so that `x < v` <=> `x < result` for every x of that dtype."""
    if dtype == torch.float64:
        return v
    r = v.to(dtype)
    return torch.where(r.double() < v, torch.nextafter(r, torch.tensor(math.inf, dtype=dtype)), r)


def _improve(
    runs: _Runs, c: torch.Tensor, b: torch.Tensor, cnt: torch.Tensor, tot: torch.Tensor
) -> torch.Tensor | None:
    """New centroids after filling empty clusters and split-merge moves that lower the SSE, or None if none.

    Splitting run [a, e) at p lowers the SSE by cL cR / (cL + cR) (mL - mR)^2; merging two runs raises it by
    the same expression of the two runs. Moves touch disjoint clusters, so their effects add up."""
    a, e = b[:-1], b[1:]
    nonempty = cnt > 0
    mean = torch.where(nonempty, tot / cnt.clamp_min(1e-300), c)
    # best split candidate of each run: at its mean (one 2-means assignment step from the run's mean)
    p = torch.minimum(torch.maximum(runs.search(mean), a + 1), (e - 1).clamp_min(0))
    pv = p.clamp(1, runs.n - 1)
    cl, cr = runs.cnt(a, p), runs.cnt(p, e)
    tl, tr = runs.tot(a, p), runs.tot(p, e)
    ml, mr = tl / cl.clamp_min(1e-300), tr / cr.clamp_min(1e-300)
    ok = (e - a >= 2) & (cl > 0) & (cr > 0) & (runs.xs[pv - 1] < runs.xs[pv])  # never split equal values
    gain = torch.where(ok, cl * cr / (cl + cr).clamp_min(1e-300) * (ml - mr) ** 2, torch.zeros_like(cl))
    # merge cost of consecutive non-empty clusters
    idx = nonempty.nonzero().squeeze(1)
    ci, mi = cnt[idx], mean[idx]
    cost = ci[:-1] * ci[1:] / (ci[:-1] + ci[1:]) * (mi[:-1] - mi[1:]) ** 2

    eps = 1e-13 * max(runs.sum_sq, 1e-300)  # below this, a move's gain is rounding noise
    order = torch.argsort(gain, descending=True, stable=True)
    n_cand = int((gain[order] > eps).sum())
    if n_cand == 0:
        return None
    splits = order[:n_cand].tolist()
    gains = gain[order[:n_cand]].tolist()
    empty = (~nonempty).nonzero().squeeze(1).tolist()
    used: set[int] = set()
    drop: list[int] = []  # centroids removed
    add: list[float] = []  # centroids added
    ml_l, mr_l = ml.tolist(), mr.tolist()
    si = 0
    for j in empty:  # fill empty clusters
        if si >= len(splits):
            break
        s = splits[si]
        si += 1
        used.add(s)
        drop += [j, s]
        add += [ml_l[s], mr_l[s]]
    if len(idx) >= 2 and si < len(splits):
        corder = torch.argsort(cost, stable=True).tolist()
        costs = cost.tolist()
        pairs = idx.tolist()
        ci_ = 0
        while si < len(splits) and ci_ < len(corder):
            s = splits[si]
            if s in used:
                si += 1
                continue
            t = corder[ci_]
            u, v = pairs[t], pairs[t + 1]
            if u in used or v in used or s in (u, v):
                ci_ += 1
                continue
            if gains[si] - costs[t] <= eps + 1e-9 * gains[si]:
                break
            used.update((s, u, v))
            tu, tv, cu, cv = float(tot[u]), float(tot[v]), float(cnt[u]), float(cnt[v])
            drop += [s, u, v]
            add += [ml_l[s], mr_l[s], (tu + tv) / (cu + cv)]
            si += 1
            ci_ += 1
    if not drop:
        return None
    keep = torch.ones(c.numel(), dtype=torch.bool)
    keep[torch.tensor(drop)] = False
    return torch.cat([c[keep], torch.tensor(add, dtype=torch.float64)]).sort().values


def _refine_pairs(runs: _Runs, b: torch.Tensor, window: int) -> torch.Tensor | None:
    """Exact best boundary between each two neighbouring non-empty clusters (others fixed), searched within
    +-window points of the current boundary; new boundaries (k+1,) or None if nothing improves.

    Lloyd fixed points are not unique: a few points away there can be a fixed point with a lower SSE.
    Boundaries of even and odd index are updated in turn, so that updated pairs never share a cluster."""
    k, n, xs = b.numel() - 1, runs.n, runs.xs
    if k < 2:
        return None
    eps = 1e-12 * max(runs.sum_sq, 1e-300)
    off = torch.arange(-window, window + 1)
    b = b.clone()
    changed = False
    for first in (1, 2):
        j = torch.arange(first, k, 2)
        if j.numel() == 0:
            continue
        a, q, e = b[j - 1, None], b[j, None], b[j + 1, None]
        p = q + off
        pc = p.clamp(1, max(n - 1, 1))
        cl, cr = runs.cnt(a, pc), runs.cnt(pc, e)
        ok = (p > a) & (p < e) & (cl > 0) & (cr > 0) & (xs[pc - 1] < xs[pc])  # never split equal values
        f = runs.tot(a, pc) ** 2 / cl.clamp_min(1e-300) + runs.tot(pc, e) ** 2 / cr.clamp_min(1e-300)
        f = torch.where(ok, f, torch.full_like(f, -math.inf))
        best, arg = f.max(1)
        cur = f[:, window]
        upd = ok[:, window] & (best - cur > eps)
        if upd.any():
            b[j[upd]] = p[upd, arg[upd]]
            changed = True
    return b if changed else None


def kmeans_1d(
    x: torch.Tensor,
    k: int,
    init: str | torch.Tensor = "linear",
    max_iter: int = 100,
    weights: torch.Tensor | None = None,
    seed: int = 0,
    improve: bool = True,
    accelerate: bool = True,
    window: int | None = None,
) -> KMeansResult:
    """K-means of the values of x (any shape, flattened) with k clusters: Lloyd's iterations plus, unless
    improve=False, empty-cluster relocation and split-merge moves (module docstring).

    Stops when no boundary moves and no move helps, or after max_iter iterations. The SSE never rises.
    Deterministic for a given seed. With improve=False it is plain Lloyd (empty clusters keep their centroid).
    """
    flat = x.detach().reshape(-1)
    if not flat.is_floating_point() or flat.dtype in (torch.float16, torch.bfloat16):
        flat = flat.float()  # exact for half types
    flat = flat.cpu()
    if flat.numel() == 0:
        raise ValueError("kmeans_1d of an empty tensor")
    order = None
    if weights is None:
        xs, w = _sorted_values(flat), None
    else:
        xs, order = torch.sort(flat)
        w = weights.detach().reshape(-1).cpu().double()[order]
    if not (torch.isfinite(xs[0]) and torch.isfinite(xs[-1])):
        raise ValueError("kmeans_1d: input has NaN or infinite values")
    runs = _Runs(xs, w)
    c = init.double().cpu().sort().values if isinstance(init, torch.Tensor) else init_centroids(xs, k, init, seed)
    if c.numel() != k:
        raise ValueError(f"kmeans_1d: init has {c.numel()} centroids, expected k={k}")
    if window is None:  # pair refinement searches ~64k candidate boundaries per sweep
        window = max(64, (1 << 16) // k)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the loop runs many tiny ops; OpenMP wake-ups made it ~10x slower on 2 cores
    try:
        c0 = c
        c, b, it = _iterate(runs, c0, max_iter, improve, accelerate, window)
        if improve and k <= 16:
            # for small k, moves can lead into a slightly worse basin than the one plain Lloyd reaches from the
            # same start: also run Lloyd with refinement but without moves and keep the lower SSE (at larger k
            # the moves win by far and the second pass would only double the loop's cost)
            c2, b2, it2 = _iterate(runs, c0, max_iter, False, accelerate, window, refine=True)
            if runs.sse(c2, b2) < runs.sse(c, b):
                c, b = c2, b2
            it += it2
    finally:
        torch.set_num_threads(threads)
    sse = max(runs.sse(c, b), 0.0)
    if order is None:  # no permutation: label each value by binary search over the k-1 midpoints
        mids = _ceil_to((c[1:] + c[:-1]) / 2, xs.dtype)
        labels = torch.bucketize(flat.to(xs.dtype), mids, right=True)
    else:
        labels_sorted = torch.repeat_interleave(torch.arange(k), b[1:] - b[:-1])
        labels = torch.empty_like(labels_sorted)
        labels[order] = labels_sorted
    return KMeansResult(c.float(), labels, sse, it)


def _iterate(
    runs: _Runs, c: torch.Tensor, max_iter: int, improve: bool, accelerate: bool, window: int, refine: bool = False
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The Lloyd loop of kmeans_1d: (centroids, run boundaries, iterations)."""
    b = runs.bounds(c)
    omega = 2.0  # over-relaxation factor, adapted: doubled while it pays, halved when it does not
    it = 0
    for it in range(1, max_iter + 1):
        cnt, tot = runs.cnt(b[:-1], b[1:]), runs.tot(b[:-1], b[1:])
        mean = torch.where(cnt > 0, tot / cnt.clamp_min(1e-300), c)  # Lloyd's update step
        b_mean = runs.bounds(mean)
        converged = torch.equal(b_mean, b)
        # moves every 8th iteration, at empty clusters and at convergence (they cost more than a Lloyd step)
        if improve and (converged or it % 8 == 1 or bool((cnt == 0).any())):
            c_imp = _improve(runs, mean, b, cnt, tot)
            if c_imp is not None:
                c, b = c_imp, runs.bounds(c_imp)
                continue
        if converged:  # a Lloyd fixed point
            c = mean
            b_ref = _refine_pairs(runs, b, window) if (improve or refine) and window > 0 else None
            if b_ref is None:
                break
            # a better split of two neighbouring clusters within +-window points of their boundary
            cnt, tot = runs.cnt(b_ref[:-1], b_ref[1:]), runs.tot(b_ref[:-1], b_ref[1:])
            c, b = torch.where(cnt > 0, tot / cnt.clamp_min(1e-300), c), b_ref
            continue
        if accelerate and it < max_iter:
            # 1-D Lloyd creeps (boundaries move a few points per step): try an over-relaxed step c + w (mean - c)
            # and keep it only if its SSE (nearest-centroid assignment) beats the plain step's
            c_acc = (c + omega * (mean - c)).sort().values
            b_acc = runs.bounds(c_acc)
            if runs.sse(c_acc, b_acc) < runs.sse(mean, b_mean):
                c, b = c_acc, b_acc
                omega = min(omega * 2, 64.0)
                continue
            omega = max(omega / 2, 1.5)
        c, b = mean, b_mean
    else:  # not converged: finish with an update step and re-assign (no-op at convergence)
        cnt, tot = runs.cnt(b[:-1], b[1:]), runs.tot(b[:-1], b[1:])
        c = torch.where(cnt > 0, tot / cnt.clamp_min(1e-300), c)
        b = runs.bounds(c)
    return c, b, it


def kmeans_1d_dp(x: torch.Tensor, k: int, weights: torch.Tensor | None = None) -> KMeansResult:
    """Globally optimal 1-D k-means by dynamic programming over the sorted values: O(k n^2) time, O(n^2)
    memory, so for small inputs only (tests, tiny tensors). Clusters may come out empty only if there are
    fewer than k distinct values."""
    flat = x.detach().reshape(-1).double().cpu()
    xs, order = torch.sort(flat)
    n = xs.numel()
    w = torch.ones(n, dtype=torch.float64) if weights is None else weights.detach().reshape(-1).double()[order]
    zero = torch.zeros(1, dtype=torch.float64)
    s0, s1, s2 = (torch.cat([zero, torch.cumsum(v, 0)]) for v in (w, w * xs, w * xs * xs))
    # cost[i, j] = SSE of run [i, j) (inf for j < i; 0 for empty runs)
    cnt = s0[None, :] - s0[:, None]
    cost = s2[None, :] - s2[:, None] - (s1[None, :] - s1[:, None]) ** 2 / cnt.clamp_min(1e-300)
    cost = torch.where(cnt > 0, cost.clamp_min(0), torch.zeros_like(cost))
    idx = torch.arange(n + 1)
    cost = torch.where(idx[None, :] >= idx[:, None], cost, torch.full_like(cost, math.inf))
    dp = cost[0].clone()  # dp[j]: best SSE of xs[:j] with m clusters
    args = []
    for _ in range(1, k):
        tot_ = dp[:, None] + cost  # split point i, end j
        dp, arg = tot_.min(0)
        args.append(arg)
    b = [n]
    for arg in reversed(args):
        b.append(int(arg[b[-1]]))
    b.append(0)
    b = torch.tensor(b[::-1])
    c_cnt = s0[b[1:]] - s0[b[:-1]]
    c_tot = s1[b[1:]] - s1[b[:-1]]
    # empty runs (fewer distinct values than k) take the next run's mean, or the max value at the end
    c = torch.where(c_cnt > 0, c_tot / c_cnt.clamp_min(1e-300), torch.full_like(c_tot, math.nan))
    last = xs[-1].item()
    for j in range(k - 1, -1, -1):
        if math.isnan(c[j].item()):
            c[j] = c[j + 1] if j + 1 < k else last
    labels_sorted = torch.repeat_interleave(torch.arange(k), b[1:] - b[:-1])
    labels = torch.empty_like(labels_sorted)
    labels[order] = labels_sorted
    return KMeansResult(c.float(), labels, float(dp[n]), 0)


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index (same shape as x, int64) of the nearest centroid (centroids ascending)."""
    mid = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(x.to(mid.dtype), mid, right=True)


def kmeans_sklearn(
    x: torch.Tensor, k: int, init: str | torch.Tensor = "linear", max_iter: int = 100, seed: int = 0
) -> KMeansResult:
    """Reference backend: scikit-learn's KMeans (n_init=1) from the same initial centroids."""
    from sklearn.cluster import KMeans as SkKMeans

    flat = x.detach().reshape(-1).double()
    c0 = init.double() if isinstance(init, torch.Tensor) else init_centroids(flat.sort().values, k, init, seed)
    km = SkKMeans(k, init=c0.numpy()[:, None], n_init=1, max_iter=max_iter, tol=0, random_state=seed)
    km.fit(flat.numpy()[:, None])
    c = torch.from_numpy(km.cluster_centers_[:, 0]).sort().values
    labels = assign(flat, c)
    return KMeansResult(c.float(), labels, float(((flat - c[labels]) ** 2).sum()), int(km.n_iter_))
