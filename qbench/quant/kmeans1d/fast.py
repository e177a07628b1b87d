"""Optional compiled kernels (numba, the `fast` extra: pip install -e '.[fast]') for the 1-D k-means' global search.

kmeans_1d_rows(search="global") runs here row by row after its sort (rows.py, rowsearch.global_rows_fast): prefix
sums (prefix_rows), the density fallback start (density_rows), the re-spaced start (respace_load / respace_cut around
NumPy's np.cbrt), then one kernel per row (global_rows): the joint boundary searches (rowsearch._descend: a dynamic
programme per search), Lloyd to a fixed point, split-merge moves each followed by Lloyd, the second search of a row
that moved and Lloyd again, the final runs; then the labels (row_labels). The NumPy/torch code stays the reference
and the fallback: these kernels port its arithmetic in the same order (the same float64 operations on the same
operands, float32 midpoint ceilings, argmax's / torch.max's first extremum, NumPy's pairwise summation where NumPy
sums, sequential cumulative sums; no fastmath), so centroids, labels and SSE are the same bit for bit
(tests/quant/test_kmeans_fast.py). Used when numba imports, unless the environment sets QBENCH_NUMBA=0 (read at
every call); QBENCH_NUMBA_THREADS=N splits the rows over N threads. Kernels compile on first use (cache=True: later
processes load them from numba's cache).

Per tensor (kmeans_1d(search="global")), only parts run here, on the same terms: the dynamic programmes of
search._viterbi and _dp_start (viterbi_tensor, dp_tensor), the blocked prefix sums at given indices (s1_blocked, for
runs._Runs.s1_at) and the label table pass (labels_table, for labels._labels)."""

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


def threads() -> int:
    """Threads the per-row kernels split rows over: QBENCH_NUMBA_THREADS (default 1; the kernels release the GIL,
    rows are independent, so the results do not depend on it). More than 1 only pays on an idle machine."""
    try:
        return max(1, int(os.environ.get("QBENCH_NUMBA_THREADS", "1")))
    except ValueError:
        return 1


def split_rows(f, g: int, *arrays) -> None:
    """Run f(*[a[i:j] for a in arrays]) over row blocks [i, j) of the g rows, in threads() threads (each array's
    first axis has g rows; f writes its results into them)."""
    n = min(threads(), g)
    if n <= 1:
        f(*arrays)
        return
    from concurrent.futures import ThreadPoolExecutor

    cuts = [g * i // n for i in range(n + 1)]
    with ThreadPoolExecutor(n) as pool:
        jobs = [pool.submit(f, *[a[i:j] for a in arrays]) for i, j in zip(cuts[:-1], cuts[1:], strict=True)]
        for job in jobs:
            job.result()


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
def _descend_row(s0, s1, unit, r, br, m, half, searches, shrink, coarse, tmp, stride, st, nb, cand, w, v, best, nbest,
                 args):  # fmt: skip
    """rowsearch._descend for row r: br (k+1,) updated in place, returns its fit (scratch as _row_viterbi's)."""
    k1 = br.size
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
    return fit


@_jit
def _scratch(k1, half):
    """(tmp, stride, st, nb, cand, w, v, best, nbest, args): _descend_row's scratch for k + 1 = k1 boundaries."""
    nc = 2 * half + 1
    return (np.empty(k1 - 1), np.empty(k1 - 2, np.int64), np.empty(k1 - 2, np.int64), np.empty(k1, np.int64),
            np.empty((k1 - 2, nc), np.int64), np.empty((k1 - 2, nc)), np.empty((k1 - 2, nc)), np.empty(nc),
            np.empty(nc), np.empty((max(k1 - 3, 1), nc), np.int64))  # fmt: skip


@_jit
def descend_rows(s0, s1, unit, b, m, half, searches, shrink, coarse):
    """rowsearch._descend row by row (b (G, k+1) int64 updated in place; returns the fits (G,)): joint searches on
    grids that shrink to single points, each row until no joint move on single points lowers its SSE or `searches`
    searches. s0 (G, m+1) prefix weights (ignored when unit), s1 (G, m+1) prefix sums, float64. The NumPy loop picks
    the window half-width per batch (_HALF on single points, _HALF_COARSE otherwise); this one takes `half` for both,
    so rowsearch calls it only when the two are equal."""
    g, k1 = b.shape
    fits = np.empty(g)
    tmp, stride, st, nb, cand, w, v, best, nbest, args = _scratch(k1, half)
    for r in range(g):
        fits[r] = _descend_row(s0, s1, unit, r, b[r], m, half, searches, shrink, coarse, tmp, stride, st, nb, cand, w,
                               v, best, nbest, args)  # fmt: skip
    return fits


# --- the rest of kmeans_1d_rows(search="global") per row (rows.py's batched torch steps, one row at a time) ---


@_jit
def _ceil_f32(v):
    """rows._ceil_f32 of one float64: the smallest float32 >= v."""
    r = np.float32(v)
    if np.float64(r) < v:
        r = np.nextafter(r, np.float32(np.inf))
    return r


@_jit
def _below(xs, r, lo, m, v):
    """Number of values of the sorted row xs[r] strictly below the float32 v (torch.searchsorted, left), searched in
    [lo, m] when xs[r, lo-1] < v (a hint, e.g. the previous midpoint's count), else in [0, m]."""
    if lo > 0 and not xs[r, lo - 1] < v:
        lo = 0
    hi = m
    while lo < hi:
        mid = (lo + hi) >> 1
        if xs[r, mid] < v:
            lo = mid + 1
        else:
            hi = mid
    return lo


@_jit
def _bounds(xs, r, c, b):
    """rows' bounds() of row r: b (k+1,) <- run starts of the centroids c (k,) float64 (nearest, ties right), from
    the float32 ceilings of the midpoints."""
    k, m = c.size, xs.shape[1]
    b[0] = 0
    lo = 0
    for j in range(k - 1):
        lo = _below(xs, r, lo, m, _ceil_f32((c[j + 1] + c[j]) * 0.5))  # midpoints ascend: search from the last
        b[j + 1] = lo
    b[k] = m


@_jit
def _means(s0, s1, unit, r, b, c, out):
    """rows' means() of row r: out (k,) <- each run's (weighted) mean; runs of zero weight keep c's centroid."""
    for j in range(c.size):
        cnt = float(b[j + 1] - b[j]) if unit else s0[r, b[j + 1]] - s0[r, b[j]]
        out[j] = (s1[r, b[j + 1]] - s1[r, b[j]]) / cnt if cnt > 0 else c[j]


@_jit
def _lloyd_row(xs, s0, s1, unit, r, c, iters, b, bn, mean):
    """rows' lloyd() of row r: plain Lloyd steps on c (k,) (in place) to a fixed point or `iters` steps (then one
    more update step). Scratch b, bn (k+1,) int64, mean (k,)."""
    k = c.size
    _bounds(xs, r, c, b)
    for it in range(1, iters + 1):
        _means(s0, s1, unit, r, b, c, mean)
        _bounds(xs, r, mean, bn)
        live = False
        for j in range(k):
            c[j] = mean[j]
        for j in range(k + 1):
            live = live or bn[j] != b[j]
        if it == iters and live:
            _means(s0, s1, unit, r, bn, c, mean)
            for j in range(k):
                c[j] = mean[j]
        if not live:
            break
        for j in range(k + 1):
            b[j] = bn[j]


@_jit
def _run_means(s0, s1, unit, r, b, c):
    """rows._searched's last step for row r: c (k,) <- the means of the runs b when every run has weight, else kept."""
    k = c.size
    for j in range(k):
        w = float(b[j + 1]) - float(b[j]) if unit else s0[r, b[j + 1]] - s0[r, b[j]]
        if not w > 0:
            return
    for j in range(k):
        w = float(b[j + 1]) - float(b[j]) if unit else s0[r, b[j + 1]] - s0[r, b[j]]
        c[j] = (s1[r, b[j + 1]] - s1[r, b[j]]) / w


@_jit
def _wat(s0, unit, r, i):
    return float(i) if unit else s0[r, i]


@_jit
def _move_row(xs, s0, s1, unit, r, c, b, cnt, tot, mean, ml, mr, gain):
    """rows._move_rows for row r: one split-merge move where it lowers the SSE (c (k,) updated, sorted); whether it
    moved. Scratch b (k+1,) int64, the rest (k,) float64."""
    k, m = c.size, xs.shape[1]
    _bounds(xs, r, c, b)
    for j in range(k):
        a, e = b[j], b[j + 1]
        cnt[j] = _wat(s0, unit, r, e) - _wat(s0, unit, r, a)
        tot[j] = s1[r, e] - s1[r, a]
        mean[j] = tot[j] / cnt[j] if cnt[j] > 0 else c[j]
    for j in range(k):
        a, e = b[j], b[j + 1]
        p = _below(xs, r, 0, m, np.float32(mean[j]))
        p = max(min(max(p, a + 1), e - 1), a)  # in [a, e]
        pv = min(max(p, 1), max(m - 1, 1))
        cl = _wat(s0, unit, r, p) - _wat(s0, unit, r, a)
        cr = _wat(s0, unit, r, e) - _wat(s0, unit, r, p)
        sp = s1[r, p]
        tl, tr = sp - s1[r, a], s1[r, e] - sp
        ok = e - a >= 2 and cl > 0 and cr > 0 and xs[r, pv - 1] < xs[r, pv]
        ml[j] = tl / cl if ok else tl
        mr[j] = tr / cr if ok else tr
        d = ml[j] - mr[j]
        gain[j] = cl * cr / (cl + cr) * (d * d) if ok else 0.0
    s = 0  # the first maximum (torch.max's index)
    for j in range(1, k):
        if gain[j] > gain[s]:
            s = j
    best_cost, t = math.inf, 0  # the first minimum of the merge costs of pairs not holding s
    for j in range(k - 1):
        both = cnt[j] + cnt[j + 1]
        if j == s or j + 1 == s:
            cost = math.inf
        elif cnt[j] > 0 and cnt[j + 1] > 0:
            d = mean[j] - mean[j + 1]
            cost = cnt[j] * cnt[j + 1] / (both if both > 0 else 1.0) * (d * d)
        else:
            cost = 0.0
        if cost < best_cost or j == 0:
            best_cost, t = cost, j
    best_gain = gain[s]
    if not best_gain - best_cost > 1e-9 * best_gain + 1e-300:  # a net gain above rounding noise
        return False
    both = cnt[t] + cnt[t + 1]
    merged = (tot[t] + tot[t + 1]) / both if both > 0 else c[t]
    c[s] = ml[s]  # the split cluster's left half
    c[t] = mr[s]  # its right half in the slot of the merged pair's first centroid
    c[t + 1] = merged
    for i in range(1, k):  # insertion sort (values only)
        v = c[i]
        j = i - 1
        while j >= 0 and c[j] > v:
            c[j + 1] = c[j]
            j -= 1
        c[j + 1] = v
    return True


@_jit
def global_rows(xs, s0, s1, unit, c, bstart, max_iter, rounds, half, searches, shrink, coarse, bout):
    """kmeans_1d_rows(search="global")'s work after the sort, the prefix sums and the starts, row by row: c (G, k)
    float64 holds each row's fallback start (density init) and ends with its centroids; bstart (G, k+1) int64 the
    search starts (rowsearch._starts; overwritten); bout (G, k+1) <- the final runs. Per row, as rows._rows runs it
    batched: search from bstart (kept c where a run has no weight), Lloyd, up to `rounds` split-merge moves each
    followed by Lloyd, then, if one moved, a search from the current runs and Lloyd again."""
    g, k1 = bstart.shape
    k, m = k1 - 1, xs.shape[1]
    tmp, stride, st, nb, cand, w, v, best, nbest, args = _scratch(k1, half)
    b, bn = np.empty(k1, np.int64), np.empty(k1, np.int64)
    f0, f1, f2, f3, f4, f5 = np.empty(k), np.empty(k), np.empty(k), np.empty(k), np.empty(k), np.empty(k)
    for r in range(g):
        cr, br = c[r], bstart[r]
        _descend_row(s0, s1, unit, r, br, m, half, searches, shrink, coarse, tmp, stride, st, nb, cand, w, v, best,
                     nbest, args)  # fmt: skip
        _run_means(s0, s1, unit, r, br, cr)
        _lloyd_row(xs, s0, s1, unit, r, cr, max_iter, b, bn, f0)
        moved = False
        if m >= 2:
            for _ in range(rounds):
                if not _move_row(xs, s0, s1, unit, r, cr, b, f0, f1, f2, f3, f4, f5):
                    break
                moved = True
                _lloyd_row(xs, s0, s1, unit, r, cr, max_iter, b, bn, f0)
        if moved:  # searched again from the runs the moves left
            _bounds(xs, r, cr, br)
            _descend_row(s0, s1, unit, r, br, m, half, searches, shrink, coarse, tmp, stride, st, nb, cand, w, v,
                         best, nbest, args)  # fmt: skip
            _run_means(s0, s1, unit, r, br, cr)
            _lloyd_row(xs, s0, s1, unit, r, cr, max_iter, b, bn, f0)
        _bounds(xs, r, cr, bout[r])


@_jit
def row_labels(x, c, out):
    """rows' labels: out (G, m) int32 <- the number of midpoints of row g's centroids c (G, k) float64 (float32
    ceilings, as rows._ceil_f32) <= each value of x (G, m) float32: compare passes for k <= 32, else binary search."""
    g, m = x.shape
    k = c.shape[1]
    mids = np.empty(max(k - 1, 1), np.float32)
    for r in range(g):
        for j in range(k - 1):
            mids[j] = _ceil_f32((c[r, j + 1] + c[r, j]) * 0.5)
        o, xr = out[r], x[r]
        if k <= 33:
            for i in range(m):
                o[i] = 0
            for j in range(k - 1):
                t = mids[j]
                for i in range(m):
                    o[i] += xr[i] >= t
        else:
            for i in range(m):
                lo, hi, v = 0, k - 1, xr[i]
                while lo < hi:
                    h = (lo + hi) >> 1
                    if mids[h] <= v:
                        lo = h + 1
                    else:
                        hi = h
                o[i] = lo


@_jit
def prefix_rows(xs, out):
    """out (G, m+1) float64 <- [0, cumsum(xs[g] as float64)] per row, added in order (as torch.cumsum on CPU and
    NumPy's cumsum: one sequential sum), in one pass instead of cast, cumsum and cat."""
    g, m = xs.shape
    for r in range(g):
        acc = 0.0
        out[r, 0] = 0.0
        for i in range(m):
            acc += np.float64(xs[r, i])
            out[r, i + 1] = acc


@_jit
def density_rows(xs, c):
    """rows.init_centroids_rows(xs, k, "density"): c (G, k) float64 <- the quantiles of each sorted row (linear
    interpolation), with the same float64 operations as its torch code."""
    g, m = xs.shape
    k = c.shape[1]
    for j in range(k):
        pos = (j + 0.5) / k * (m - 1)
        i0 = int(math.floor(pos))
        i1 = min(i0 + 1, m - 1)
        frac = pos - i0
        for r in range(g):
            v0, v1 = np.float64(xs[r, i0]), np.float64(xs[r, i1])
            c[r, j] = v0 + frac * (v1 - v0)


@_jit
def respace_load(xs, s0, unit, b, u):
    """rowsearch._respace's first half: u (G, k) <- W d^2 of each run of b (G, k+1) (W its weight, d = hi - lo its
    width, in float32 as NumPy computes it), 0 for empty runs; the caller takes np.cbrt (NumPy's own, which may be
    a SIMD one: numba's cbrt is not guaranteed to round alike)."""
    g, k1 = b.shape
    m = xs.shape[1]
    for r in range(g):
        for j in range(k1 - 1):
            a, e = b[r, j], b[r, j + 1]
            w = float(e) - float(a) if unit else s0[r, e] - s0[r, a]
            d = xs[r, max(e - 1, 0)] - xs[r, min(a, m - 1)]  # hi - lo, float32
            d2 = d * d  # float32, as NumPy's (hi - lo) ** 2 of float32 arrays
            if math.isfinite(d2):
                wd2 = w * np.float64(d2)
            else:  # float32 overflow (|x| beyond ~1.8e19): float64, as _respace
                dd = np.float64(xs[r, max(e - 1, 0)]) - np.float64(xs[r, min(a, m - 1)])
                wd2 = w * (dd * dd)
            u[r, j] = wd2 if e > a and w > 0 else 0.0


@_jit
def respace_cut(b, u, out):
    """rowsearch._respace's second half: out (G, k+1) <- boundaries that give every run the same share of the
    cumulative u (G, k) (cube roots of respace_load's values), spread evenly over each run's points; rows with no
    spread keep b. Same float64 operations as the NumPy code (sequential cumsum, j / k * total)."""
    g, k1 = b.shape
    k = k1 - 1
    cum = np.empty(k1)
    inner = np.empty(max(k - 1, 1), np.int64)
    for r in range(g):
        cum[0] = 0.0
        for j in range(k):
            cum[j + 1] = cum[j] + u[r, j]
        if not cum[k] > 0:  # all values equal: keep the runs
            for j in range(k1):
                out[r, j] = b[r, j]
            continue
        for j in range(1, k):
            t = j / k * cum[k]
            n = 0  # the run holding the cut: (cum <= t).sum() - 1, clipped to [0, k-1]
            for q in range(k1):
                n += cum[q] <= t
            i = min(max(n - 1, 0), k - 1)
            frac = (t - cum[i]) / max(u[r, i], 1e-300)
            frac = min(frac, 1.0)
            bi, bn = b[r, i], b[r, i + 1]
            inner[j - 1] = int(bi + frac * (bn - bi))
        for i in range(1, k - 1):  # insertion sort
            v = inner[i]
            q = i - 1
            while q >= 0 and inner[q] > v:
                inner[q + 1] = inner[q]
                q -= 1
            inner[q + 1] = v
        out[r, 0] = 0
        for j in range(k - 1):
            out[r, j + 1] = inner[j]
        out[r, k] = b[r, k]


# --- per tensor (kmeans_1d, search.py): the dynamic programmes of _viterbi and _dp_start ---


@_jit
def _run_fit(dv, dw):
    """S1^2 / S0 of a run (dv: its sum, dw: its weight), -inf when it has no weight (as np.where(d0 > 0, ...))."""
    return dv * dv / dw if dw > 0 else -math.inf


@_jit
def viterbi_tensor(cand, w, v, w_end, v_end, out):
    """search._viterbi's dynamic programme: out (k-1,) <- the candidate of each inner boundary on the best path,
    from the candidates cand (k-1, C) and the prefix weights w and sums v (k-1, C) at them (NumPy's s1_at), the
    totals w_end, v_end. Same float64 operations as the NumPy code; argmax: first maximum, first NaN."""
    k1, nc = w.shape
    best = np.empty(nc)
    col = np.empty(nc)
    args = np.empty((max(k1 - 1, 1), nc), np.int64)
    for c in range(nc):  # the first cluster [0, cand[0, c])
        best[c] = v[0, c] * v[0, c] / w[0, c] if w[0, c] > 0 else -math.inf
    nbest = np.empty(nc)
    for j in range(k1 - 1):  # the cluster [cand[j, a], cand[j+1, c]) after the best path to cand[j, a]
        for c in range(nc):
            for a in range(nc):
                col[a] = best[a] + _run_fit(v[j + 1, c] - v[j, a], w[j + 1, c] - w[j, a])
            arg = _argmax_first(col, 0, nc)
            args[j, c] = arg
            nbest[c] = col[arg]
        for c in range(nc):
            best[c] = nbest[c]
    for c in range(nc):  # the last cluster [cand[-1, c], n)
        dw = w_end - w[k1 - 1, c]
        dv = v_end - v[k1 - 1, c]
        col[c] = best[c] + (dv * dv / dw if w_end > w[k1 - 1, c] else -math.inf)
    sel = _argmax_first(col, 0, nc)
    out[k1 - 1] = cand[k1 - 1, sel]
    for j in range(k1 - 2, -1, -1):
        sel = args[j, sel]
        out[j] = cand[j, sel]


@_jit
def dp_tensor(s0, s1, k, out):
    """search._dp_start's dynamic programme: out (k+1,) <- the indices (into the summary edges) of the optimal
    k runs of the summary with prefix weights s0 and sums s1 (m+1,) at its edges: maximise sum S1^2 / S0 over the
    runs. Same float64 operations and argmax ties as the NumPy code (tot[j, i] = g[j, i] + best[i], first maximum)."""
    m1 = s0.size
    g = np.empty((m1, m1))
    for j in range(m1):
        for i in range(m1):
            g[j, i] = _run_fit(s1[j] - s1[i], s0[j] - s0[i])  # runs i..j-1 (-inf unless i < j)
    best = np.empty(m1)
    nbest = np.empty(m1)
    for j in range(m1):
        best[j] = g[j, 0]
    args = np.empty((max(k - 1, 1), m1), np.int64)
    row = np.empty(m1)
    for layer in range(k - 1):
        # g[j, i] = -inf for i >= j (no weight; s0 ascends), so tot[j, i] = -inf there unless best[i] is +inf or NaN
        # (overflow): then the whole row is scanned, else only i < j (the same first maximum: ties go to the lowest i)
        full = False
        for i in range(m1):
            full = full or not best[i] < math.inf
        for j in range(m1):
            n = m1 if full else max(j, 1)
            for i in range(n):
                row[i] = g[j, i] + best[i]
            a = _argmax_first(row, 0, n)
            args[layer, j] = a
            nbest[j] = row[a]
        for j in range(m1):
            best[j] = nbest[j]
    out[k] = m1 - 1
    for layer in range(k - 2, -1, -1):
        out[layer + 1] = args[layer, out[layer + 2]]
    out[0] = 0


@_jit
def labels_table(bits, x, lut, thr, use_thr, out):
    """labels._labels' table pass fused: out (n,) int32 <- lut[key] (+ 1 where x >= thr[key] when use_thr), key the
    top 16 bits of each float32 x (bits: x viewed as uint32)."""
    if use_thr:
        for i in range(x.size):
            key = bits[i] >> 16
            out[i] = np.int32(lut[key]) + (x[i] >= thr[key])
    else:
        for i in range(x.size):
            out[i] = lut[bits[i] >> 16]


@_jit
def s1_blocked(xs, blocks, j, out):
    """runs._Runs.s1_at with blocked prefix sums: out <- blocks[j >> 5] + the sum of the values of j's block before
    j, as NumPy sums the block's 32 values (the later ones zeroed) in float64: one pairwise block of 8 accumulators.
    j, out: flat (same size)."""
    n = xs.size
    tmp = np.empty(32)
    for q in range(j.size):
        blk = j[q] >> 5
        base = blk << 5
        r = j[q] - base
        for t in range(32):
            tmp[t] = np.float64(xs[min(base + t, n - 1)]) if t < r else 0.0
        out[q] = blocks[blk] + _pairwise_block(tmp, 0, 32)
