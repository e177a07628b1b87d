"""Exact-step 1-D k-means for weight tensors.

Weights are scalars, so after one sort every cluster is a contiguous run of the sorted values and a Lloyd
iteration needs only k boundary searches and prefix sums: O(k log n) per iteration after the O(n log n) sort.

On top of plain Lloyd, every iteration
- relocates empty clusters by splitting the non-empty clusters whose split at their mean lowers the SSE most, and
- applies split-merge moves: merge two neighbouring clusters and split another one when that lowers the SSE.
Both are evaluated exactly from the prefix sums (the SSE of a run is sum(w x^2) - S1^2 / S0), so every step
lowers the SSE and the result is a Lloyd fixed point (each centroid the mean of its members, each point at its
nearest centroid) whenever the loop converges within max_iter.

Cost: one NumPy sort (values only), float64 prefix sums, then iterations on arrays of k values: each a few dozen
NumPy calls and one or two searches of k values in the sorted data, so tens of microseconds, not milliseconds of
torch dispatch. Labels in input order come from a table over the value range plus one compare pass per boundary
in a table cell (`_labels`), several times faster than a binary search per value (torch.bucketize), in cache-sized
chunks and written over the sorted copy (no fresh data-sized memory: its page faults cost as much as a pass).

Large unweighted inputs (>= _COARSE_MIN values, improve=True) are searched from starts of their own instead of
`init` (_solve_large), because the loop's cost is its number of iterations (~50-100 us each, whatever n):
- k <= 16: the optimum of a ~150-run summary of the sorted values (equal-count, equal-width and log-spaced tail
  runs; a dynamic programme on a (m, m) table), then joint searches of all k-1 boundaries over candidate grids that
  shrink 8x a search (a Viterbi pass over the boundaries, exact from the prefix sums) until no boundary moves on
  the one-point grid, then a Lloyd fixed-point check: the optimum on MiniLM's tensors, in ~5 searches;
- k > 16: on block means (one weighted point per 32 sorted values, outlier blocks split into their values): a
  Panter-Dite start (centroid density ~ p^(1/3)), re-spaced twice to equal distortion per cluster (_respace), at
  most 12 steps of the loop above, one joint boundary search; then at most 3 plain Lloyd steps on all values.

`kmeans_1d_dp` is the exact optimum (dynamic programming over the sorted values, O(k n^2)) for small inputs.
"""

from __future__ import annotations

import math
import sys
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

INITS = ("linear", "density", "kmeans++")
SEARCHES = ("lloyd", "global")  # kmeans_1d: iterate from `init` | large inputs searched from their own starts


@dataclass
class KMeansResult:
    centroids: torch.Tensor  # (k,) float32, ascending
    labels: torch.Tensor  # (n,) index into centroids, same order as the input: int32 from kmeans_1d and
    # kmeans_1d_rows (as Codebook stores it: half the memory and page faults of int64), int64 from the others
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


_CHUNK = 1 << 16  # elements per chunk of float64 sums (stays in cache, no n-sized float64 copy)


def _prefix(v: np.ndarray) -> np.ndarray:
    """(n+1,) float64 prefix sums of v, starting at 0."""
    s = np.empty(v.size + 1, dtype=np.float64)
    s[0] = 0.0
    np.cumsum(v, dtype=np.float64, out=s[1:])
    return s


def _sum_sq(xs: np.ndarray, w: np.ndarray | None) -> float:
    """sum(w x^2) in float64, chunked (einsum's loop: no BLAS threads, which cost ms under load)."""
    total = 0.0
    for i in range(0, xs.size, _CHUNK):
        x = xs[i : i + _CHUNK].astype(np.float64)
        total += float(np.einsum("i,i->", x, x) if w is None else np.einsum("i,i,i->", w[i : i + _CHUNK], x, x))
    return total


def _block_stats(xs: np.ndarray) -> tuple[np.ndarray, float]:
    """(float64 sums (nb,) of the nb full blocks of _BLOCK values of xs, float64 sum of squares of all of xs).

    One pass in chunks that stay in cache: each chunk converted to float64 once, then einsum's SIMD loops for the
    row sums and the squares (several times faster than a float64 reduction of float32 rows of 32)."""
    nb = xs.size // _BLOCK
    sums = np.empty(nb)
    total = 0.0
    for i in range(0, xs.size, _CHUNK):  # _CHUNK is a multiple of _BLOCK: chunks start at block edges
        x = xs[i : i + _CHUNK].astype(np.float64)
        total += float(np.einsum("i,i->", x, x))
        full = min(x.size, nb * _BLOCK - i) // _BLOCK  # full blocks in this chunk
        if full > 0:
            np.einsum("ij->i", x[: full * _BLOCK].reshape(full, _BLOCK), out=sums[i // _BLOCK : i // _BLOCK + full])
    return sums, total


_BLOCK = 32  # values per block of the blocked prefix sums
_BLOCKED_MIN = 1 << 15  # unweighted inputs of at least this many values use blocked prefix sums
_AR = np.arange(_BLOCK)


class _Runs:
    """Sorted values (NumPy, float32 or float64) with float64 prefix sums; statistics of runs [a, b) in O(1).

    Large unweighted inputs keep prefix sums only at every 32nd value (one reduction pass over the data instead of
    a float64 cumsum, which is latency-bound and costs more than the sort): the sum up to index j is the block's
    prefix plus the exact float64 sum of at most 31 values (s1_at).

    The Lloyd loop works on arrays of k values, where each torch op costs microseconds of dispatch (and OpenMP
    wake-ups on a busy machine), so everything here is NumPy."""

    def __init__(self, xs: np.ndarray, w: np.ndarray | None):
        self.xs, self.n = xs, xs.size
        self.s0 = None if w is None else _prefix(w)  # None: s0[j] = j
        self.blocks = None
        if w is None and xs.size >= _BLOCKED_MIN:
            sums, self.sum_sq = _block_stats(xs)
            self.blocks = np.empty(sums.size + 1)
            self.blocks[0] = 0.0
            np.cumsum(sums, out=self.blocks[1:])
            self.s1 = None
        else:
            self.s1 = _prefix(xs if w is None else w * xs)
            self.sum_sq = _sum_sq(xs, w)

    def s1_at(self, j: np.ndarray) -> np.ndarray:
        """Prefix sums (float64) at indices j (any shape, 0 <= j <= n)."""
        if self.blocks is None:
            return self.s1[j]
        blk = j >> 5
        base = blk << 5
        v = self.xs[np.minimum(base[..., None] + _AR, self.n - 1)]
        v[_AR >= (j - base)[..., None]] = 0
        return self.blocks[blk] + v.sum(-1, dtype=np.float64)

    def s1_window(self, start: np.ndarray, length: int) -> np.ndarray:
        """(m, length + 1) prefix sums at start + t, t = 0..length (start (m,) in [0, n]; S1(n) past the end)."""
        if self.blocks is None:
            return self.s1[np.minimum(start[:, None] + np.arange(length + 1), self.n)]
        idx = start[:, None] + np.arange(length)
        v = self.xs[np.minimum(idx, self.n - 1)].astype(np.float64)
        v[idx >= self.n] = 0.0
        out = np.empty((start.size, length + 1))
        out[:, 0] = self.s1_at(start)
        np.cumsum(v, axis=1, out=out[:, 1:])
        out[:, 1:] += out[:, :1]
        return out

    def coarse(self, k: int) -> _Runs:
        """Weighted runs of block means: one point per block of _BLOCK sorted values (weight = its length), except
        that blocks wider than 1/(_WIDE k) of the value range (sparse tails, outliers) keep their values as points.
        A clustering of these points is one of the data with the same cluster sums (boundaries fall between
        blocks), so Lloyd steps on it are exact on the data; they only cost no partial-block sums (s1_at). Its prefix
        sums are the data's at the points' edges, and its sum of squares is the data's (SSEs are the data's)."""
        n, xs = self.n, self.xs
        nb = n // _BLOCK  # full blocks
        e = np.append(np.arange(0, n, _BLOCK), n)  # (m+1,) block edges
        s1 = self.s1[e] if self.blocks is None else np.append(self.blocks, self.s1_at(e[nb + 1 :]))
        last = xs[np.minimum(e[1:], n) - 1]  # (blocks,) each block's last value (the final block may be short)
        wide = np.flatnonzero(last - xs[e[:-1]] > (float(xs[-1]) - float(xs[0])) / (_WIDE * k))
        if wide.size:  # edges inside the wide blocks, each block's after its start edge (e and s1 stay sorted)
            e_in = wide[:, None] * _BLOCK + np.arange(1, _BLOCK)  # (w, B-1) inner edges (past n in a short block)
            v = xs[np.minimum(e_in - 1, n - 1)].astype(np.float64)
            s1_in = np.cumsum(v, axis=1)
            s1_in += s1[wide][:, None]
            inside = e_in < n
            extra = np.zeros(e.size, dtype=np.int64)
            extra[wide] = inside.sum(1)  # inner edges inserted after each block start
            pos = np.arange(e.size) + np.concatenate([[0], np.cumsum(extra)[:-1]])  # new places of the old edges
            at_old = np.zeros(e.size + int(extra.sum()), dtype=bool)
            at_old[pos] = True
            e2, s12 = np.empty(at_old.size, dtype=np.int64), np.empty(at_old.size)
            e2[pos], s12[pos] = e, s1
            e2[~at_old], s12[~at_old] = e_in[inside], s1_in[inside]  # row-major: ascending
            e, s1 = e2, s12
        cnt = np.diff(e).astype(np.float64)
        out = _Runs.__new__(_Runs)  # built from the prefix sums at hand (no second pass over the points)
        out.xs, out.n, out.blocks, out.sum_sq = np.diff(s1) / cnt, cnt.size, None, self.sum_sq
        out.s0, out.s1 = e.astype(np.float64), s1
        return out

    def cnt(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (b - a).astype(np.float64) if self.s0 is None else self.s0[b] - self.s0[a]

    def tot(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self.s1_at(b) - self.s1_at(a)

    def stats(self, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(weight, weighted sum) of each run of the boundaries b (weight int64 when unweighted)."""
        s1 = self.s1_at(b)
        s0 = b if self.s0 is None else self.s0[b]
        return s0[1:] - s0[:-1], s1[1:] - s1[:-1]

    def sse(self, c: np.ndarray, b: np.ndarray) -> float:
        """SSE of centroids c over runs b: per run sum(w (x - c)^2) = sum(w x^2) - 2 c S1 + c^2 S0, for any c."""
        return self.sum_sq - _fit(c, *self.stats(b))

    def search(self, values: np.ndarray) -> np.ndarray:
        """Number of sorted values strictly below each of `values` (float64), exact for float32 data."""
        return np.searchsorted(self.xs, _ceil_to(values, self.xs.dtype))

    def bounds(self, c: np.ndarray) -> np.ndarray:
        """(k+1,) start offsets of each centroid's run: points go to the nearest centroid, ties to the right.
        (The midpoints are padded with -inf and +inf, whose searches give 0 and n: one NumPy call fewer.)"""
        m = np.empty(c.size + 1)
        m[0], m[-1] = -math.inf, math.inf
        np.add(c[1:], c[:-1], out=m[1:-1])
        m *= 0.5
        return self.search(m)


def _ceil_to(v: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Smallest value of `dtype` >= v, so that `x < v` <=> `x < result` for every x of that dtype."""
    if dtype == np.float64:
        return v
    r = v.astype(dtype)
    np.nextafter(r, dtype.type(np.inf), out=r, where=r < v)
    return r


def _mean(cnt: np.ndarray, tot: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Lloyd's update step: each run's mean; empty runs keep their centroid."""
    return np.divide(tot, cnt, out=c.copy(), where=cnt > 0)


def _fit(c: np.ndarray, cnt: np.ndarray, tot: np.ndarray) -> float:
    """sum_sq - SSE of centroids c over runs of weight cnt and sum tot: sum(2 c tot - c^2 cnt)."""
    return float(np.dot(c, 2 * tot - c * cnt))


def _improve(runs: _Runs, c: np.ndarray, b: np.ndarray, cnt: np.ndarray, tot: np.ndarray) -> np.ndarray | None:
    """New centroids after filling empty clusters and split-merge moves that lower the SSE, or None if none.

    Splitting run [a, e) at p lowers the SSE by cL cR / (cL + cR) (mL - mR)^2; merging two runs raises it by
    the same expression of the two runs. Moves touch disjoint clusters, so their effects add up."""
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


_KEYS = np.arange(1 << 16, dtype=np.uint32)
_NEG = _KEYS >= 0x8000  # sign bit set
# cell K = the float32 values whose top 16 bits are K (an interval); rank of K in value order, lowest value of K
_RANK = np.where(_NEG, 0xFFFF - _KEYS, 0x8000 + _KEYS).astype(np.int64)
_LOW = np.where(_NEG, (_KEYS << 16) | 0xFFFF, _KEYS << 16).astype(np.uint32).view(np.float32)
_LITTLE = sys.byteorder == "little"
_CMP_MIDS = 3  # up to this many midpoints (k <= 4), labels come from one compare pass per midpoint


def _labels(flat: np.ndarray, mids: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Number of `mids` (ascending, of flat's dtype) <= each value of flat, as int32 (written into `out` if given).
    Equal to np.searchsorted(mids, flat, 'right'), whose branchy binary search costs ~50-100 ns a value.

    Instead, for float32: the top 16 bits of a float32 (sign, exponent, 7 mantissa bits) name an interval of values,
    a cell, and the label is constant on every cell that holds no midpoint. So one gather from a 2^16-entry table
    indexed by those bits (a strided uint16 view of the data, no pass to compute it) gives each value the label of its
    cell's lowest value, and, when midpoints fall strictly inside cells, one compare with the cell's midpoint (+inf
    elsewhere) adds the rest. With at most _CMP_MIDS midpoints, one compare pass per midpoint replaces the table.
    Cells holding two or more midpoints (k far above 2^8, or far outliers): binary search.

    The passes run over chunks of _LABEL_CHUNK values with buffers reused from chunk to chunk: data-sized temporaries
    would each be fresh memory, whose first touch (page faults) costs more than the passes themselves here."""
    n = flat.size
    lab = np.empty(n, dtype=np.int32) if out is None else out
    if mids.size == 0:
        lab[:] = 0
        return lab
    if n < 4096 or flat.dtype != np.float32 or not _LITTLE or not np.isfinite(mids).all() or mids.size > 255:
        lab[:] = np.searchsorted(mids, flat, side="right")
        return lab
    lut = thr = None
    if mids.size > _CMP_MIDS:
        cell = mids.view(np.uint32) >> 16
        inside = mids > _LOW[cell]  # the cell also holds values below its midpoint
        r = _RANK[cell] + inside
        lut = np.cumsum(np.bincount(r, minlength=(1 << 16) + 1)[: 1 << 16])[_RANK]  # midpoints <= each cell's lowest
        lut = lut.astype(np.uint8)  # (labels < 256: gathers of uint8 cost a fraction of int32 ones)
        split = cell[inside]
        pos_zero = bool((mids.view(np.uint32) == 0).any())
        if pos_zero:  # a midpoint +0.0: -0.0 >= +0.0 while the other values of the -0.0 cell are below it
            split = np.append(split, np.uint32(0x8000))
        if split.size:
            if np.unique(split).size < split.size:  # a cell with two midpoints
                lab[:] = np.searchsorted(mids, flat, side="right")
                return lab
            thr = np.full(1 << 16, np.inf, dtype=np.float32)
            thr[cell[inside]] = mids[inside]
            if pos_zero:
                thr[0x8000] = -0.0
    key = flat.view(np.uint16)[1::2]  # little-endian: the high half of each float32
    c = min(n, _LABEL_CHUNK)
    lab8, ge = np.empty(c, dtype=np.uint8), np.empty(c, dtype=bool)
    th = None if thr is None else np.empty(c, dtype=np.float32)  # the gathered thresholds, only when needed
    for i in range(0, n, c):
        j = min(n, i + c)
        x, l8, g = flat[i:j], lab8[: j - i], ge[: j - i]
        if lut is None:  # few midpoints: one compare pass each, counted in uint8
            _count_ge(x, mids, l8, g)
        else:
            np.take(lut, key[i:j], out=l8)
            if thr is not None:
                t = np.take(thr, key[i:j], out=th[: j - i])
                np.add(l8, np.greater_equal(x, t, out=g), out=l8)
        lab[i:j] = l8
    return lab


_LABEL_CHUNK = 1 << 15  # values per chunk of _labels' passes (its buffers stay in cache)


def _count_ge(x: np.ndarray, mids, l8: np.ndarray, ge: np.ndarray) -> None:
    """l8 (uint8, like x) = how many of `mids` are <= each value of x: one compare pass per midpoint (each a scalar,
    or an array that broadcasts against x), ge a bool buffer like x."""
    l8[:] = 0
    for m in mids:
        np.add(l8, np.greater_equal(x, m, out=ge), out=l8)


_COARSE_MIN = 1 << 15  # unweighted inputs of at least this many values are clustered coarse-to-fine (improve=True)
_WIDE = 64  # blocks wider than 1/(_WIDE k) of the value range are split into their values (Runs.coarse)
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
    search: str = "lloyd",
) -> KMeansResult:
    """K-means of the values of x (any shape, flattened) with k clusters: Lloyd's iterations plus, unless
    improve=False, empty-cluster relocation and split-merge moves (module docstring).

    weights: optional non-negative sample weights like x (weighted SSE, weighted means). Weights that are all
    equal are ignored (the same clustering, computed as unweighted; the SSE is scaled by the weight), and so are
    weights that are all zero (no weighted solution exists; the SSE is then 0).

    Stops when no boundary moves and no move helps, or after max_iter iterations. The SSE never rises.
    Deterministic for a given seed. With improve=False it is plain Lloyd (empty clusters keep their centroid).

    search="global": unweighted inputs of at least _COARSE_MIN (32768) values with improve=True do not start from
    `init` (it is still validated): _solve_large's own starts (module docstring) reach a lower SSE (the optimum at
    k <= 16 on MiniLM) in far fewer iterations. search="lloyd" (default): every input iterates from `init`.
    """
    if search not in SEARCHES:
        raise ValueError(f"unknown k-means search {search!r}; valid: {', '.join(SEARCHES)}")
    flat_t = x.detach().reshape(-1)
    if not flat_t.is_floating_point() or flat_t.dtype in (torch.float16, torch.bfloat16):
        flat_t = flat_t.float()  # exact for half types
    flat = flat_t.cpu().resolve_conj().resolve_neg().numpy()
    if flat.size == 0:
        raise ValueError("kmeans_1d of an empty tensor")
    order = None
    scale = 1.0  # sse factor: constant weights are clustered as no weights
    if weights is not None:
        wf = weights.detach().reshape(-1)
        if wf.numel() != flat.size:
            raise ValueError(f"kmeans_1d: {wf.numel()} weights for {flat.size} values")
        w0 = float(wf[0])
        if not (torch.isfinite(wf).all() and (wf >= 0).all()):
            raise ValueError("kmeans_1d: weights must be finite and non-negative")
        if bool((wf == w0).all()):  # all equal, all zero included (no weighted solution: clustered unweighted)
            weights, scale = None, w0
    if weights is None:
        xs, w = np.sort(flat), None  # values only: NumPy's SIMD sort, many times faster than torch.sort
    else:
        order = np.argsort(flat, kind="stable")
        xs = flat[order]
        w = weights.detach().reshape(-1).cpu().double().numpy()[order]
    if not (np.isfinite(xs[0]) and np.isfinite(xs[-1])):
        raise ValueError("kmeans_1d: input has NaN or infinite values")
    runs = _Runs(xs, w)
    if window is None:  # pair refinement searches ~4k candidate boundaries per sweep (wider windows cost far
        window = max(16, (1 << 12) // k)  # more than they gain: the SSE moves by < 1e-3 on BERT-like tensors)
    large = search == "global" and improve and w is None and flat.size >= _COARSE_MIN  # own starts: _solve_large
    if isinstance(init, torch.Tensor):
        c0 = np.sort(init.detach().reshape(-1).double().cpu().numpy())
    elif large and init in INITS:
        c0 = np.zeros(k)  # not used
    else:
        c0 = init_centroids(torch.from_numpy(xs), k, init, seed).numpy()
    if c0.size != k:
        raise ValueError(f"kmeans_1d: init has {c0.size} centroids, expected k={k}")
    if large:
        c, b, it = _solve_large(runs, k, max_iter, accelerate, window)
    else:
        c, b, it = _iterate(runs, c0, max_iter, improve, accelerate, window)
    if improve and k <= 16 and not large:
        # for small k, moves can lead into a slightly worse basin than the one plain Lloyd reaches from the
        # same start: also run Lloyd with refinement but without moves and keep the lower SSE (at larger k
        # the moves win by far and the second pass would only double the loop's cost)
        c2, b2, it2 = _iterate(runs, c0, max_iter, False, accelerate, window, refine=True)
        if runs.sse(c2, b2) < runs.sse(c, b):
            c, b = c2, b2
        it += it2
    sse = max(runs.sse(c, b), 0.0) * scale
    if order is None:  # no permutation: label each value by the k-1 midpoints, over the sorted copy (not needed
        # any more; int32 over float32: no fresh data-sized memory)
        mids = _ceil_to((c[1:] + c[:-1]) / 2, xs.dtype)
        labels = _labels(flat, mids, xs.view(np.int32) if xs.dtype == np.float32 else None)
    else:
        labels = np.empty(flat.size, dtype=np.int32)
        labels[order] = np.repeat(np.arange(k, dtype=np.int32), b[1:] - b[:-1])
    return KMeansResult(torch.from_numpy(c.astype(np.float32)), torch.from_numpy(labels), sse, it)


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


# --- many independent 1-D k-means at once: one per row of a matrix (per-row / per-group codebooks) ---


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
) -> KMeansResult:
    """Plain Lloyd k-means of every row of x (G, m), all rows at once: centroids (G, k), labels (G, m), sse the total
    (weighted when weights are given).

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
    with an SSE no higher than plain Lloyd's from the same init (the result differs from kmeans_1d's moves)."""
    with _one_thread():
        return _rows(x, k, init, max_iter, seed, weights, improve)


def _rows(
    x: torch.Tensor, k: int, init: str, max_iter: int, seed: int, weights: torch.Tensor | None, improve: bool
) -> KMeansResult:
    """kmeans_1d_rows' work (see there)."""
    x = x.detach()
    if x.dim() != 2 or x.numel() == 0:
        raise ValueError(f"kmeans_1d_rows expects a non-empty (rows, values) matrix, got shape {tuple(x.shape)}")
    x = x.float().cpu().contiguous()  # float32 data, as kmeans_1d's float32 path (half types are exact in float32)
    if not torch.isfinite(x).all():
        raise ValueError("kmeans_1d_rows: input has NaN or infinite values")
    w_sse, w = _row_weights(weights, tuple(x.shape)) if weights is not None else (None, None)
    g_all, m = x.shape
    zero = torch.zeros(g_all, 1, dtype=torch.float64)
    if w is None:
        xs = torch.from_numpy(np.sort(x.numpy(), axis=1))  # (G, m): values only, NumPy's SIMD sort (no indices)
        s0 = None  # run weight = run length
        s1 = torch.cat([zero, torch.cumsum(xs.double(), 1)], 1)  # (G, m+1) prefix sums, float64, sequential as NumPy's
    else:
        xs, order = torch.sort(x, dim=1, stable=True)  # the stable order of kmeans_1d's weighted path
        ws = w.gather(1, order)
        s0 = torch.cat([zero, torch.cumsum(ws, 1)], 1)
        s1 = torch.cat([zero, torch.cumsum(ws * xs.double(), 1)], 1)
        del ws, order
    c = init_centroids_rows(xs, k, init, seed)  # (G, k) float64

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
    rows = torch.arange(g_all)
    for _ in range(4 * k if improve and k >= 3 else 0):  # split-merge moves, one per row and round
        rows = _move_rows(rows, c, xs, s0, s1, bounds)
        if rows.numel() == 0:
            break
        lloyd(rows, max_iter)
    mids = _ceil_f32((c[:, 1:] + c[:, :-1]) * 0.5)  # (G, k-1)
    labels = _row_labels(x, mids)  # (G, m): number of midpoints <= each value
    if w_sse is None:  # sum x^2 minus the fit, from the prefix sums at the final runs (no data-sized temporaries)
        b = bounds(xs, c)
        tot = _diff1(torch.take(s1, torch.arange(g_all)[:, None] * (m + 1) + b))  # (G, k) run sums
        sse = max(_sum_sq(x.numpy().reshape(-1), None) - float((c * (2 * tot - c * _diff1(b))).sum()), 0.0)
    else:  # with the caller's weights
        sse = float((w_sse * (x.double() - c.gather(1, labels.long())) ** 2).sum())
    return KMeansResult(c.float(), labels, sse, max_iter)


_ROW_CMP_MIDS = 31  # up to this many midpoints (k <= 32), per-row labels come from one compare pass per midpoint


def _row_labels(x: torch.Tensor, mids: torch.Tensor) -> torch.Tensor:
    """(G, m) int32: the number of midpoints of each row (mids (G, k-1), ascending, float32) <= each value of that row
    of x (G, m), as torch.searchsorted(mids, x, right=True). For k <= 32, one compare pass per midpoint counted in
    uint8 over row chunks that stay in cache: several times faster than a binary search per value at k = 16."""
    if mids.shape[1] > _ROW_CMP_MIDS:
        return torch.searchsorted(mids, x, right=True).to(torch.int32)
    xn, mn = x.numpy(), mids.numpy()
    g, m = xn.shape
    out = np.empty((g, m), dtype=np.int32)
    rows = max(1, _LABEL_CHUNK // m)
    lab8, ge = np.empty((rows, m), dtype=np.uint8), np.empty((rows, m), dtype=bool)
    for i in range(0, g, rows):
        j = min(g, i + rows)
        _count_ge(xn[i:j], mn[i:j].T[:, :, None], lab8[: j - i], ge[: j - i])  # midpoint t: column (rows, 1)
        out[i:j] = lab8[: j - i]
    return torch.from_numpy(out)
