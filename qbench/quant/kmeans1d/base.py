"""Shared pieces of the 1-D k-means solvers: the result type, initial centroids, nearest-centroid assignment and
the closed forms every solver uses (a run's mean; the SSE of centroids over runs from their sums)."""

from __future__ import annotations

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


def assign(x: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """Index (same shape as x, int64) of the nearest centroid (centroids ascending)."""
    mid = (centroids[1:] + centroids[:-1]) / 2
    return torch.bucketize(x.to(mid.dtype), mid, right=True)
