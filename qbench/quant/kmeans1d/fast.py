"""Optional compiled kernels (numba, the `fast` extra: pip install -e '.[fast]') for kmeans_1d_rows' global search.

rowsearch._descend (the joint boundary searches, ~2/3 of kmeans_1d_rows(search="global")'s time in NumPy: a dynamic
programme per search batched over chunks of rows, with a Python step per boundary) runs here row by row in compiled
loops. The NumPy code stays the reference and the fallback: these kernels port its arithmetic in the same order
(the same float64 operations on the same operands, argmax's first maximum, NumPy's pairwise summation where NumPy
sums; no fastmath), so the boundaries, and hence centroids and labels, are the same bit for bit
(tests/quant/test_kmeans_fast.py). Used when numba imports, unless the environment sets QBENCH_NUMBA=0 (read at
every call). Kernels compile on first use (cache=True: later processes load them from numba's cache)."""

from __future__ import annotations

import math
import os

import numpy as np

try:
    import numba
except ImportError:  # the extra is not installed: NumPy only
    numba = None


def enabled() -> bool:
    """Whether the numba kernels are used: numba importable and QBENCH_NUMBA not "0"."""
    return numba is not None and os.environ.get("QBENCH_NUMBA", "1") != "0"


def _jit(f):
    return numba.njit(cache=True, nogil=True)(f) if numba is not None else f


@_jit
def _pairwise_block(a, lo, n):
    """sum(a[lo:lo+n]), n <= 128, as NumPy's pairwise_sum adds float64 (a plain loop below 8 values, else 8
    accumulators combined as ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7)), then the rest)."""
    if n < 8:
        res = 0.0
        for i in range(n):
            res += a[lo + i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    while i < n - n % 8:
        p = lo + i
        r0, r1, r2, r3 = r0 + a[p], r1 + a[p + 1], r2 + a[p + 2], r3 + a[p + 3]
        r4, r5, r6, r7 = r4 + a[p + 4], r5 + a[p + 5], r6 + a[p + 6], r7 + a[p + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@_jit
def _pairwise(a, lo, n):
    """sum(a[lo:lo+n]) as NumPy's pairwise summation (ndarray.sum along a contiguous axis) adds float64, so that
    _row_fit equals rowsearch._fit bit for bit: blocks of <= 128 values (_pairwise_block), larger ranges split in
    halves rounded down to a multiple of 8 and summed left + right. NumPy recurses; this walks the same tree with
    an explicit stack (numba's cache=True mishandles recursive functions: a segfault on loading them)."""
    if n <= 128:
        return _pairwise_block(a, lo, n)
    los = np.empty(192, np.int64)  # frames (lo, n, stage); depth <= 63 halvings, 3 frames each
    ns = np.empty(192, np.int64)
    stage = np.empty(192, np.int64)
    vals = np.empty(128)
    top, nv = 0, 0
    los[0], ns[0], stage[0] = lo, n, 0
    while top >= 0:
        fl, fn, fs = los[top], ns[top], stage[top]
        top -= 1
        if fn <= 128:
            vals[nv] = _pairwise_block(a, fl, fn)
            nv += 1
        elif fs == 1:  # both halves summed: combine
            vals[nv - 2] = vals[nv - 2] + vals[nv - 1]
            nv -= 1
        else:
            n2 = fn // 2
            n2 -= n2 % 8
            los[top + 1], ns[top + 1], stage[top + 1] = fl, fn, 1
            los[top + 2], ns[top + 2], stage[top + 2] = fl + n2, fn - n2, 0  # right half, popped after the left
            los[top + 3], ns[top + 3], stage[top + 3] = fl, n2, 0
            top += 3
    return vals[0]


@_jit
def _argmax_first(a, lo, n):
    """Index in [0, n) of the first maximum of a[lo:lo+n], the first NaN if any (as ndarray.argmax)."""
    best, arg = a[lo], 0
    if best != best:
        return 0
    for i in range(1, n):
        v = a[lo + i]
        if v > best or v != v:
            best, arg = v, i
            if v != v:
                break
    return arg


@_jit
def _weight_at(s0, unit, r, i):
    """Prefix weight of row r at index i: the index itself for unit weights (s0 unused)."""
    return float(i) if unit else s0[r, i]


@_jit
def _row_fit(s0, s1, unit, r, b, tmp):
    """rowsearch._fit of row r's boundaries b (k+1,): sum over the runs of S1^2 / S0 (-inf for a run of no weight),
    summed pairwise as NumPy does; tmp (k,) scratch."""
    k = b.size - 1
    for j in range(k):
        w = _weight_at(s0, unit, r, b[j + 1]) - _weight_at(s0, unit, r, b[j])
        v = s1[r, b[j + 1]] - s1[r, b[j]]
        tmp[j] = v * v / w if w > 0 else -math.inf
    return 0.0 + _pairwise(tmp, 0, k)


@_jit
def _row_viterbi(s0, s1, unit, r, b, stride, m, half, out, cand, w, v, best, nbest, args):
    """rowsearch._viterbi_rows for row r: out (k+1,) <- the best joint move of b's inner boundaries to
    b[j] + stride[j-1] * t, t = -half..half; returns its fit. Scratch: cand, w, v (k-1, C), best, nbest (C,),
    args (k-2, C) int64; C = 2 half + 1."""
    k1 = b.size
    nc = 2 * half + 1
    for j in range(k1 - 2):
        for c in range(nc):
            p = b[j + 1] + stride[j] * (c - half)
            p = min(max(p, 0), m)
            cand[j, c] = p
            w[j, c] = _weight_at(s0, unit, r, p)
            v[j, c] = s1[r, p]
    w_end = float(m) if unit else s0[r, m]
    v_end = s1[r, m]
    for c in range(nc):  # the run [0, cand[0, c])
        best[c] = v[0, c] * v[0, c] / w[0, c] if w[0, c] > 0 else -math.inf  # NumPy's ** 2 is a square
    tot = np.empty(nc)
    for j in range(k1 - 3):  # the run [cand[j, a], cand[j+1, c]) after the best path to cand[j, a]
        for c in range(nc):
            for a in range(nc):
                d0 = w[j + 1, c] - w[j, a]
                if d0 > 0:
                    d1 = v[j + 1, c] - v[j, a]
                    f = d1 * d1 / d0
                else:
                    f = -math.inf
                tot[a] = f + best[a]
            arg = _argmax_first(tot, 0, nc)
            args[j, c] = arg
            nbest[c] = tot[arg]
        for c in range(nc):
            best[c] = nbest[c]
    for c in range(nc):  # the last run [cand[-1, c], m)
        dl = w_end - w[k1 - 3, c]
        dv = v_end - v[k1 - 3, c]
        last = dv * dv / dl if dl > 0 else -math.inf
        tot[c] = best[c] + last
    sel = _argmax_first(tot, 0, nc)
    fit = tot[sel]
    for j in range(k1):
        out[j] = b[j]
    out[k1 - 2] = cand[k1 - 3, sel]
    for j in range(k1 - 4, -1, -1):
        sel = args[j, sel]
        out[j + 1] = cand[j, sel]
    return fit


@_jit
def descend_rows(s0, s1, unit, b, m, half, searches, shrink, coarse):
    """rowsearch._descend row by row (b (G, k+1) int64 updated in place; returns the fits (G,)): joint searches on
    grids that shrink to single points, each row until no joint move on single points lowers its SSE or `searches`
    searches. s0 (G, m+1) prefix weights (ignored when unit), s1 (G, m+1) prefix sums, float64. The NumPy loop picks
    the window half-width per batch (_HALF on single points, _HALF_COARSE otherwise); this one takes `half` for both,
    so rowsearch calls it only when the two are equal."""
    g, k1 = b.shape
    nc = 2 * half + 1
    fits = np.empty(g)
    tmp = np.empty(k1 - 1)
    stride = np.empty(k1 - 2, np.int64)
    st = np.empty(k1 - 2, np.int64)
    nb = np.empty(k1, np.int64)
    cand = np.empty((k1 - 2, nc), np.int64)
    w = np.empty((k1 - 2, nc))
    v = np.empty((k1 - 2, nc))
    best = np.empty(nc)
    nbest = np.empty(nc)
    args = np.empty((max(k1 - 3, 1), nc), np.int64)
    for r in range(g):
        br = b[r]
        fit = _row_fit(s0, s1, unit, r, br, tmp)
        for j in range(k1 - 2):
            stride[j] = max(1, min(br[j + 1] - br[j], br[j + 2] - br[j + 1]) // coarse)
        for _ in range(searches):
            coarse_left = False
            for j in range(k1 - 2):
                st[j] = stride[j]
                coarse_left = coarse_left or st[j] > 1
            nfit = _row_viterbi(s0, s1, unit, r, br, st, m, half, nb, cand, w, v, best, nbest, args)
            better = nfit > fit + (1e-12 * abs(fit) if math.isfinite(fit) else 0.0)  # above rounding noise
            for j in range(k1 - 2):  # a boundary inside its window is searched next on a finer grid
                inside = abs(nb[j + 1] - br[j + 1]) < half * st[j] or not better
                stride[j] = max(1, st[j] // shrink) if inside else st[j]
            if better:
                for j in range(k1):
                    br[j] = nb[j]
                fit = nfit
            if not (better or coarse_left):  # no better move on the one-point grid
                break
        fits[r] = fit
    return fits
