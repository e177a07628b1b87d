"""kmeans_1d_rows' global search (search="global"): a near-optimal 1-D k-means of every row of a matrix at once.

Lloyd from a fixed start stalls in poor local optima on rows of a few hundred values (empty clusters, centroids
spent on the bulk while an outlier pulls a whole cluster): on sampled MiniLM rows plain Lloyd from the linear init is
51 % above the exact optimum at k = 16 (benchmarks/kmeans_rows_gap.py). This search works on run boundaries of the
sorted rows (every cluster of an optimal 1-D clustering is a run of the sorted values), evaluated exactly from the
prefix sums, batched over chunks of _CHUNK_ROWS rows in NumPy:

1. start: equal-count runs, re-spaced twice to equal distortion per run (high-resolution theory: a run of weight W
   and width d has an SSE ~ W d^2 / 12, and an optimal quantizer gives every cluster the same; _respace);
2. joint boundary searches (_viterbi_rows): every inner boundary may move to one of 2 * half + 1 candidates
   spaced `stride` apart, and a dynamic programme over the k-1 boundaries picks the best combination exactly
   (maximum of sum S1^2 / S0 over the runs, i.e. the lowest SSE). Strides start at 1/_HALF_COARSE of the shorter
   run next to the boundary (a boundary can cross its neighbours' runs) and shrink by _SHRINK once the boundary
   lands inside its window, down to single points; a row stops when no joint move on single points lowers its SSE
   (at most _SEARCHES searches).

The caller (rows.py) then runs plain Lloyd steps to a fixed point (centroids = run means, labels = nearest centroid),
split-merge moves (as improve=True), and searches again, from their runs, the rows that the moves changed.
Rows with fewer than k distinct values (or of zero weight) where no k non-empty runs exist keep their start.
_STARTS > 1 also searches from plain equal-count and equal-width runs and keeps each row's best (about 3x the time
for a slightly lower mean gap; 1 by default).
"""

from __future__ import annotations

import math

import numpy as np
import torch

import qbench.quant.kmeans1d.fast as fast

_HALF = 4  # candidates per boundary in a joint search on single points: 2 * _HALF + 1
_HALF_COARSE = 4  # the same on coarser grids (steps of several points)
_SEARCHES = 24  # most joint searches per row (rows whose boundaries stop moving on the one-point grid leave early)
_SHRINK = 2  # a boundary's step shrinks by this factor once it lands inside its window
_STARTS = 1  # starts searched per row, best kept (_starts)
_RESPACES = 2  # equal-distortion re-spacings of the equal-count start
_CHUNK_ROWS = 256  # rows per batch of the searches (fewer Python steps; 64 was 10-15 % slower on SmolLM2's matrices)


def _at(s: np.ndarray | None, b: np.ndarray) -> np.ndarray:
    """Prefix sums s (G, m+1) at indices b (G, ...) along each row; s None: the index itself (unit weights)."""
    if s is None:
        return b.astype(np.float64)
    off = (np.arange(b.shape[0]) * s.shape[1]).reshape((-1,) + (1,) * (b.ndim - 1))
    return s.ravel()[b + off]


def _fit(s0, s1, b: np.ndarray) -> np.ndarray:
    """(G,) sum over the runs of b (G, k+1) of S1^2 / S0 (-inf when a run has no weight): sum_sq - SSE."""
    w, v = np.diff(_at(s0, b), axis=1), np.diff(_at(s1, b), axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        f = np.where(w > 0, v * v / np.where(w > 0, w, 1.0), -math.inf)
    return f.sum(1)


def _respace(xs: np.ndarray, s0, b: np.ndarray) -> np.ndarray:
    """Boundaries (G, k+1) that give every run the same share of sum (W d^2)^(1/3) over the runs of b (W: a run's
    weight, d: its width), spreading each run's share evenly over its points (module docstring, step 1)."""
    g, k1 = b.shape
    k, m = k1 - 1, xs.shape[1]
    w = np.diff(_at(s0, b), axis=1)  # (G, k)
    lo = np.take_along_axis(xs, np.minimum(b[:, :-1], m - 1), 1)
    hi = np.take_along_axis(xs, np.maximum(b[:, 1:] - 1, 0), 1)
    with np.errstate(over="ignore"):
        d2 = (hi - lo) ** 2  # float32 (G, k)
    big = ~np.isfinite(d2)  # |x| beyond ~1.8e19: float32 overflows (inf starts broke the cuts), float64 instead
    wd2 = w * d2 if not big.any() else np.where(big, w * (hi.astype(np.float64) - lo) ** 2, w * d2)
    u = np.cbrt(np.where((b[:, 1:] > b[:, :-1]) & (w > 0), wd2, 0.0))
    cum = np.concatenate([np.zeros((g, 1)), np.cumsum(u, 1)], 1)  # (G, k+1)
    t = np.arange(1, k) / k * cum[:, -1:]  # (G, k-1) cuts of the cumulative share
    i = np.clip((cum[:, None, :] <= t[:, :, None]).sum(-1) - 1, 0, k - 1)  # the run holding each cut
    ci, ui = np.take_along_axis(cum, i, 1), np.take_along_axis(u, i, 1)
    bi, bn = np.take_along_axis(b, i, 1), np.take_along_axis(b, i + 1, 1)
    frac = np.minimum((t - ci) / np.maximum(ui, 1e-300), 1.0)
    inner = np.sort((bi + frac * (bn - bi)).astype(np.int64), 1)
    out = np.concatenate([np.zeros((g, 1), np.int64), inner, np.full((g, 1), m, np.int64)], 1)
    ok = cum[:, -1] > 0  # rows with no spread (all values equal) keep their runs
    return np.where(ok[:, None], out, b)


def _viterbi_rows(s0, s1, b: np.ndarray, stride: np.ndarray, m: int, half: int) -> tuple[np.ndarray, np.ndarray]:
    """(boundaries (G, k+1), their fit (G,)): the best joint move of the inner boundaries of b (G, k+1), each to
    b + stride * t, t = -_HALF.._HALF (stride (G, k-1)): a dynamic programme over the boundaries (layer j: the
    candidates of boundary j; a step: the run between two consecutive ones), exact from the prefix sums."""
    g, k1 = b.shape
    t = np.arange(-half, half + 1)
    cand = np.clip(b[:, 1:-1, None] + stride[:, :, None] * t, 0, m)  # (G, k-1, C)
    w, v = _at(s0, cand), _at(s1, cand)
    w_end = np.full((g, 1), float(m)) if s0 is None else s0[:, -1:]
    v_end = s1[:, -1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        first = np.where(w[:, 0] > 0, v[:, 0] ** 2 / w[:, 0], -math.inf)  # (G, C): the run [0, cand[0])
        # (k-2, G, C, C) [j, row, c, a]: the run [cand[j, a], cand[j+1, c]) (a last: argmax and max along the
        # contiguous axis, each layer j contiguous)
        wt, vt = np.ascontiguousarray(w.transpose(1, 0, 2)), np.ascontiguousarray(v.transpose(1, 0, 2))
        d0 = wt[1:, :, :, None] - wt[:-1, :, None, :]
        d1 = vt[1:, :, :, None] - vt[:-1, :, None, :]
        np.multiply(d1, d1, out=d1)
        valid = d0 > 0
        f = np.divide(d1, d0, out=d1, where=valid)  # S1^2 / S0 of each run, -inf where it has no weight
        np.copyto(f, -math.inf, where=~valid)
        dl = w_end - w[:, -1]
        last = np.where(dl > 0, (v_end - v[:, -1]) ** 2 / dl, -math.inf)  # (G, C): the last run
    best, args = first, []
    for j in range(k1 - 3):
        tot = np.add(f[j], best[:, None, :], out=f[j])  # (G, C, C): [this candidate, previous candidate]
        arg = tot.argmax(2)  # (G, C)
        args.append(arg)
        best = np.take_along_axis(tot, arg[:, :, None], 2)[:, :, 0]  # the max, gathered (cheaper than a 2nd reduce)
    best = best + last
    sel = best.argmax(1)
    fit = np.take_along_axis(best, sel[:, None], 1)[:, 0]
    out = b.copy()
    rows = np.arange(g)
    out[:, k1 - 2] = cand[rows, k1 - 3, sel]
    for j in range(k1 - 4, -1, -1):
        sel = args[j][rows, sel]
        out[:, j + 1] = cand[rows, j, sel]
    return out, fit


def search_rows(
    xs: np.ndarray, s0: np.ndarray | None, s1: np.ndarray, k: int, b0: np.ndarray | None = None
) -> np.ndarray:
    """Run boundaries (G, k+1) of a near-optimal k-means of each sorted row of xs (G, m) (float32) with prefix sums
    s1 (G, m+1) of w x and s0 of w (None: unit weights), both float64 (module docstring); from the runs b0 (G, k+1)
    instead of the re-spaced equal-count start when given."""
    out = []
    for i in range(0, xs.shape[0], _CHUNK_ROWS):
        sl = slice(i, i + _CHUNK_ROWS)
        out.append(_search(xs[sl], None if s0 is None else s0[sl], s1[sl], k, None if b0 is None else b0[sl]))
    return np.concatenate(out)


def _starts(xs: np.ndarray, s0, k: int) -> list[np.ndarray]:
    """Start boundaries (G, k+1): equal-count runs re-spaced _RESPACES times, equal-count runs, equal-width runs."""
    g, m = xs.shape
    eq = np.rint(np.arange(k + 1) * (m / k)).astype(np.int64)[None].repeat(g, 0)
    b = eq
    for _ in range(_RESPACES):
        b = _respace(xs, s0, b)
    if _STARTS < 3:
        return [b, eq][:_STARTS]
    lo, hi = xs[:, :1].astype(np.float64), xs[:, -1:].astype(np.float64)
    cuts = (lo + (hi - lo) * (np.arange(1, k) / k)).astype(np.float32)  # (G, k-1)
    inner = torch.searchsorted(torch.from_numpy(xs), torch.from_numpy(cuts)).numpy()
    width = np.concatenate([np.zeros((g, 1), np.int64), inner, np.full((g, 1), m, np.int64)], 1)
    return [b, eq, width][:_STARTS]


def _search(xs: np.ndarray, s0, s1, k: int, b0: np.ndarray | None) -> np.ndarray:
    """The best of the searches from each start (or from b0) per row."""
    best, fit = None, None
    for b in [b0.copy()] if b0 is not None else _starts(xs, s0, k):
        b, f = _descend_any(s0, s1, b, xs.shape[1])
        if best is None:
            best, fit = b, f
        else:
            win = f > fit
            best[win], fit[win] = b[win], f[win]
    return best


def fast_rows() -> bool:
    """Whether kmeans_1d_rows(search="global") runs per row in numba (global_rows_fast): fast.enabled(), and one
    window half-width for every search (the kernels take one)."""
    return fast.enabled() and _HALF == _HALF_COARSE


def global_rows_fast(xs: np.ndarray, s0, s1: np.ndarray, c: np.ndarray, max_iter: int, rounds: int) -> np.ndarray:
    """kmeans_1d_rows(search="global")'s steps after the prefix sums, in fast.global_rows row by row: c (G, k)
    float64 (the density start, contiguous) updated in place to the centroids; returns the final runs (G, k+1).
    The start is _starts' (equal-count runs re-spaced), from fast.respace_load / respace_cut."""
    k = c.shape[1]
    unit = s0 is None
    s0c = np.zeros((1, 1)) if unit else s0
    b = _start_fast(xs, s0c, unit, k)
    out = np.empty_like(b)

    def run(xs, s0, s1, c, b, out) -> None:
        fast.global_rows(xs, s0, s1, unit, c, b, max_iter, rounds, _HALF, _SEARCHES, _SHRINK, _HALF_COARSE, out)

    if unit:  # (s0 a (1, 1) placeholder: the same for every block of rows)
        fast.split_rows(lambda xs, s1, c, b, out: run(xs, s0c, s1, c, b, out), xs.shape[0], xs, s1, c, b, out)
    else:
        fast.split_rows(run, xs.shape[0], xs, s0c, s1, c, b, out)
    return out


def _start_fast(xs: np.ndarray, s0c: np.ndarray, unit: bool, k: int) -> np.ndarray:
    """_starts(xs, s0, k)[0] in numba: equal-count runs re-spaced _RESPACES times (the cube roots by NumPy's
    np.cbrt, as _respace takes them: numba's own cbrt need not round alike)."""
    g, m = xs.shape
    b = np.rint(np.arange(k + 1) * (m / k)).astype(np.int64)[None].repeat(g, 0)
    u = np.empty((g, k))
    for _ in range(_RESPACES):
        fast.respace_load(xs, s0c, unit, b, u)
        out = np.empty_like(b)
        fast.respace_cut(b, np.cbrt(u), out)
        b = out
    return b


def _descend_any(s0, s1, b: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """_descend, in numba's compiled loops when fast.enabled() (the same boundaries and fits bit for bit; the
    kernel takes one window half-width, so it needs _HALF == _HALF_COARSE), else the NumPy reference below."""
    if not (fast.enabled() and _HALF == _HALF_COARSE and b.shape[1] >= 3):
        return _descend(s0, s1, b, m)
    b = np.ascontiguousarray(b, dtype=np.int64)
    unit = s0 is None
    s0c = np.zeros((1, 1)) if unit else np.ascontiguousarray(s0, dtype=np.float64)
    fit = fast.descend_rows(s0c, np.ascontiguousarray(s1, dtype=np.float64), unit, b, m, _HALF, _SEARCHES, _SHRINK,
                            _HALF_COARSE)  # fmt: skip
    return b, fit


def _descend(s0, s1, b: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """(boundaries, fit) after joint searches from b (G, k+1) on grids that shrink to single points."""
    g = b.shape[0]
    fit = _fit(s0, s1, b)
    length = np.diff(b, axis=1)
    stride = np.maximum(1, np.minimum(length[:, :-1], length[:, 1:]) // _HALF_COARSE)  # (G, k-1)
    live = np.arange(g)
    for _ in range(_SEARCHES):
        st = stride[live]
        half = _HALF if (st == 1).all() else _HALF_COARSE  # narrow windows while steps shrink, wide on single points
        every = live.size == g  # all rows still searched: the prefix sums as they are (no copy)
        s0l = None if s0 is None else (s0 if every else s0[live])
        nb, nfit = _viterbi_rows(s0l, s1 if every else s1[live], b[live], st, m, half)
        cur = fit[live]
        better = nfit > cur + np.where(np.isfinite(cur), 1e-12 * np.abs(cur), 0.0)  # above rounding noise
        # a boundary that ends inside its window is searched next on a finer grid; one at the edge keeps its step
        inside = (np.abs(nb - b[live])[:, 1:-1] < half * st) | ~better[:, None]
        upd = live[better]
        b[upd], fit[upd] = nb[better], nfit[better]
        stride[live] = np.where(inside, np.maximum(1, st // _SHRINK), st)
        live = live[better | (st > 1).any(1)]  # done: no better move on the one-point grid
        if live.size == 0:
            break
    return b, fit
