"""Reference solvers: the exact optimum by dynamic programming (small inputs) and scikit-learn's KMeans."""

from __future__ import annotations

import math

import torch

from qbench.quant.kmeans1d.base import KMeansResult, assign, init_centroids


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
