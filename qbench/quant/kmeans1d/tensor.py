"""kmeans_1d: one codebook for all values of a tensor (sort, Lloyd loop with moves or the global search, labels)."""

from __future__ import annotations

import numpy as np
import torch

from qbench.quant.kmeans1d.base import INITS, SEARCHES, KMeansResult, _ceil_to, init_centroids
from qbench.quant.kmeans1d.labels import _labels
from qbench.quant.kmeans1d.lloyd import _iterate
from qbench.quant.kmeans1d.runs import _Runs
from qbench.quant.kmeans1d.search import _COARSE_MIN, _solve_large


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
