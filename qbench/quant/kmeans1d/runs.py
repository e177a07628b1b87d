"""Sorted values with float64 prefix sums: the statistics (weight, sum, SSE) of any run of sorted values in O(1),
the only access to the data that the Lloyd loop and the global search need."""

from __future__ import annotations

import math

import numpy as np

import qbench.quant.kmeans1d.fast as fast
from qbench.quant.kmeans1d.base import _ceil_to, _fit

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
_WIDE = 64  # blocks wider than 1/(_WIDE k) of the value range are split into their values (Runs.coarse)


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
        if fast.enabled():  # the same sums in numba (fast.s1_blocked): one call instead of six NumPy ones
            j = np.asarray(j)
            out = np.empty(j.shape)
            fast.s1_blocked(self.xs, self.blocks, np.ascontiguousarray(j, np.int64).reshape(-1), out.reshape(-1))
            return out if j.ndim else out[()]
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
