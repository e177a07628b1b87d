"""The Lloyd loop of kmeans_1d on the sorted values (_Runs): update steps with over-relaxation, empty-cluster
relocation and split-merge moves (_improve), and exact pair refinement of boundaries (_refine_pairs)."""

from __future__ import annotations

import math

import numpy as np

from qbench.quant.kmeans1d.base import _fit, _mean
from qbench.quant.kmeans1d.runs import _Runs


def _improve(runs: _Runs, c: np.ndarray, b: np.ndarray, cnt: np.ndarray, tot: np.ndarray) -> np.ndarray | None:
    """New centroids after filling empty clusters and split-merge moves that lower the SSE, or None if none.

    Splitting run [a, e) at p lowers the SSE by cL cR / (cL + cR) (mL - mR)^2; merging two runs raises it by
    the same expression of the two runs. Moves touch disjoint clusters, so their effects add up."""
    if runs.n < 2:  # one value: nothing to split (and no xs[1] to compare)
        return None
    a, e = b[:-1], b[1:]
    cnt = cnt.astype(np.float64)
    nonempty = cnt > 0
    mean = _mean(cnt, tot, c)
    # best split candidate of each run: at its mean (one 2-means assignment step from the run's mean)
    p = np.maximum(np.minimum(np.maximum(runs.search(mean), a + 1), e - 1), a)  # in [a, e]
    pv = np.clip(p, 1, max(runs.n - 1, 1))
    cl, cr = runs.cnt(a, p), runs.cnt(p, e)
    tl, tr = runs.tot(a, p), runs.tot(p, e)
    ml, mr = tl / np.maximum(cl, 1e-300), tr / np.maximum(cr, 1e-300)
    xs = runs.xs
    ok = (e - a >= 2) & (cl > 0) & (cr > 0) & (xs[pv - 1] < xs[pv])  # never split equal values
    gain = np.where(ok, cl * cr / np.maximum(cl + cr, 1e-300) * (ml - mr) ** 2, 0.0)

    eps = 1e-13 * max(runs.sum_sq, 1e-300)  # below this, a move's gain is rounding noise
    order = np.argsort(-gain, kind="stable")
    n_cand = int(np.count_nonzero(gain > eps))
    if n_cand == 0:
        return None
    splits = order[:n_cand].tolist()
    gains = gain[order[:n_cand]].tolist()
    empty = np.flatnonzero(~nonempty).tolist()
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
    idx = np.flatnonzero(nonempty)
    if idx.size >= 2 and si < len(splits):
        # merge cost of consecutive non-empty clusters
        ci, mi = cnt[idx], mean[idx]
        cost = ci[:-1] * ci[1:] / (ci[:-1] + ci[1:]) * (mi[:-1] - mi[1:]) ** 2
        corder = np.argsort(cost, kind="stable").tolist()
        costs = cost.tolist()
        pairs = idx.tolist()
        cnt_l, tot_l = cnt.tolist(), tot.tolist()
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
            drop += [s, u, v]
            add += [ml_l[s], mr_l[s], (tot_l[u] + tot_l[v]) / (cnt_l[u] + cnt_l[v])]
            si += 1
            ci_ += 1
    if not drop:
        return None
    keep = np.ones(c.size, dtype=bool)
    keep[drop] = False
    return np.sort(np.concatenate([c[keep], np.array(add, dtype=np.float64)]))


def _refine_pairs(runs: _Runs, b: np.ndarray, window: int) -> np.ndarray | None:
    """Exact best boundary between each two neighbouring non-empty clusters (others fixed), searched within
    +-window points of the current boundary; new boundaries (k+1,) or None if nothing improves.

    Lloyd fixed points are not unique: a few points away there can be a fixed point with a lower SSE.
    Boundaries of even and odd index are updated in turn, so that updated pairs never share a cluster."""
    k, n, xs = b.size - 1, runs.n, runs.xs
    if k < 2:
        return None
    eps = 1e-12 * max(runs.sum_sq, 1e-300)
    off = np.arange(-window, window + 1)
    off1 = np.arange(-window - 1, window + 1)
    b = b.copy()
    changed = False
    for first in (1, 2):
        j = np.arange(first, k, 2)
        if j.size == 0:
            continue
        a, q, e = b[j - 1, None], b[j, None], b[j + 1, None]
        p = q + off
        ok = (p > a) & (p < e)  # so 1 <= p <= n - 1 where ok
        pc = np.clip(p, 1, max(n - 1, 1))
        xw = xs[np.clip(q + off1, 0, n - 1)]  # xw[:, i], xw[:, i + 1] = xs[p - 1], xs[p] where ok
        ok &= xw[:, :-1] < xw[:, 1:]  # never split equal values
        cl, cr = runs.cnt(a, pc), runs.cnt(pc, e)
        if runs.s0 is not None:  # zero weights
            ok &= (cl > 0) & (cr > 0)
        st = np.clip(q[:, 0] - window, 0, n)
        s1p = np.take_along_axis(runs.s1_window(st, 2 * window), np.clip(p - st[:, None], 0, 2 * window), 1)
        tl, tr = s1p - runs.s1_at(a), runs.s1_at(e) - s1p
        tl *= tl
        tr *= tr
        f = np.divide(tl, cl, out=np.full(tl.shape, -math.inf), where=ok)
        f += np.divide(tr, cr, out=np.zeros_like(tr), where=ok)
        arg = f.argmax(1)
        best = np.take_along_axis(f, arg[:, None], 1)[:, 0]
        cur = f[:, window]
        upd = ok[:, window] & (best > cur + eps)
        if upd.any():
            b[j[upd]] = p[upd, arg[upd]]
            changed = True
    return b if changed else None


def _iterate(
    runs: _Runs, c: np.ndarray, max_iter: int, improve: bool, accelerate: bool, window: int, refine: bool = False
) -> tuple[np.ndarray, np.ndarray, int]:
    """The Lloyd loop of kmeans_1d: (centroids, run boundaries, iterations). The statistics of the current runs
    (cnt, tot) are carried over from the step that chose them; each step is a few dozen NumPy calls on k values
    and one or two binary searches of k values in the sorted data."""
    b = runs.bounds(c)
    cnt, tot = runs.stats(b)
    omega = 2.0  # over-relaxation factor, adapted: doubled while it pays, halved when it does not
    it = 0
    for it in range(1, max_iter + 1):
        mean = _mean(cnt, tot, c)  # Lloyd's update step
        # moves every 8th iteration, at empty clusters and at convergence (they cost more than a Lloyd step)
        tried = improve and (it % 8 == 1 or not cnt.all())
        if tried:
            c_imp = _improve(runs, mean, b, cnt, tot)
            if c_imp is not None:
                c, b = c_imp, runs.bounds(c_imp)
                cnt, tot = runs.stats(b)
                continue
        if accelerate and it < max_iter:
            # 1-D Lloyd creeps (boundaries move a few points per step): try an over-relaxed step c + w (mean - c)
            # and keep it if its SSE (nearest-centroid assignment) beats that of the means on the current runs,
            # which is no lower than the plain step's: the SSE still falls, and the plain step needs no search
            c_acc = mean - c
            c_acc *= omega
            c_acc += c
            c_acc.sort()
            b_acc = runs.bounds(c_acc)
            cnt_a, tot_a = runs.stats(b_acc)
            if _fit(c_acc, cnt_a, tot_a) > _fit(mean, cnt, tot):
                c, b, cnt, tot = c_acc, b_acc, cnt_a, tot_a
                omega = min(omega * 2, 64.0)
                continue
            omega = max(omega / 2, 1.5)
        b_mean = runs.bounds(mean)
        if not (b_mean != b).any():  # a Lloyd fixed point
            if improve and not tried:
                c_imp = _improve(runs, mean, b, cnt, tot)
                if c_imp is not None:
                    c, b = c_imp, runs.bounds(c_imp)
                    cnt, tot = runs.stats(b)
                    continue
            c = mean
            b_ref = _refine_pairs(runs, b, window) if (improve or refine) and window > 0 else None
            if b_ref is None:
                break
            # a better split of two neighbouring clusters within +-window points of their boundary
            cnt, tot = runs.stats(b_ref)
            c, b = _mean(cnt, tot, c), b_ref
            cnt, tot = runs.stats(b)
            continue
        c, b = mean, b_mean
        cnt, tot = runs.stats(b)
    else:  # not converged: finish with an update step and re-assign (no-op at convergence)
        c = _mean(cnt, tot, c)
        b = runs.bounds(c)
    return c, b, it
