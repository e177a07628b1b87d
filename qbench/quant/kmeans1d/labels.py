"""Labels in input order: the number of centroid midpoints <= each value, by a table over the float32 bit patterns
and compare passes (several times faster than a binary search per value), for one tensor and for rows."""

from __future__ import annotations

import sys

import numpy as np
import torch

import qbench.quant.kmeans1d.fast as fast

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
    if lut is not None and fast.enabled():  # the same counts in one compiled pass (no chunks, no temporaries; the
        # compare passes of k <= 4 stay NumPy's: its uint8 SIMD passes were faster than a loop per value)
        fast.labels_table(flat.view(np.uint32), flat, lut, np.empty(1, np.float32) if thr is None else thr,
                          thr is not None, lab)  # fmt: skip
        return lab
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
