"""Where the learned-range QAT schemes start: SQNR at initialisation against per-tensor symmetric min-max, and how
close LAQ's scale fit gets to the optimum of its own objective.

MiniLM-L6 (real weights). Three tables:
1. SQNR (dB) at init on one tensor (default: layer-0 attention query weight), rows min-max, pact, lsq, mds, laq
   (LAQ: its first fit, D = 1), columns bits.
2. Over every quantized MiniLM tensor (embeddings and encoder, as conf/model/minilm.yaml): the worst margin
   SQNR(scheme) - SQNR(min-max) in dB, and which tensor it is (skipped with --quick).
3. LAQ: its objective Σ (w - α q(w/α))² at the α it uses, divided by the best over a grid of clip values, at 1-8
   bits, on Gaussian weights and on the chosen tensor.

Only the schemes' constructors and `laq_alpha(w, bits)` are used, so it runs against older qbench checkouts too:

    python benchmarks/init_sqnr.py [--quick] [--tensor encoder.layer.0.attention.self.query.weight]
    cd /old/checkout && PYTHONPATH=. python /path/to/benchmarks/init_sqnr.py
"""

from __future__ import annotations

import argparse
import fnmatch

import torch

from qbench.quant import primitives as P
from qbench.quant.laq import LAQ, laq_alpha
from qbench.quant.lsq import LSQ
from qbench.quant.mds import MDS
from qbench.quant.pact import PACT

SCHEMES = {"pact": PACT, "lsq": LSQ, "mds": MDS, "laq": LAQ}
BITS = (2, 3, 4, 8)
INCLUDE = ["embeddings.*", "encoder.*"]  # conf/model/minilm.yaml's include, for the bare AutoModel's names


def minilm_tensors() -> dict[str, torch.Tensor]:
    """The MiniLM weights qbench quantizes (2-D Linear and Embedding weights), by name."""
    from omegaconf import OmegaConf
    from transformers import AutoModel

    from qbench.config import model_schema
    from qbench.models import load_model
    from qbench.overrides import conf_dir

    model = load_model(model_schema(OmegaConf.load(conf_dir() / "model" / "minilm.yaml")), AutoModel, 0)
    return {n: p.detach().clone() for n, p in model.named_parameters()
            if p.dim() == 2 and any(fnmatch.fnmatch(n, pat) for pat in INCLUDE)}  # fmt: skip


def sqnr_minmax(w: torch.Tensor, bits: int) -> float:
    return P.sqnr_db(w, P.linear_fake_quant(w, bits, symmetric=True, granularity="tensor"))


@torch.no_grad()
def sqnr_init(scheme, w: torch.Tensor, bits: int) -> float:
    """SQNR of the scheme's quantizer as built for w (its initial range), applied to w."""
    return P.sqnr_db(w, scheme(bits=bits).parametrization(w, transposed=False)(w))


def laq_error(w: torch.Tensor, alpha: float, bits: int) -> float:
    """LAQ's objective (D = 1) written out: Σ (w - α q(w/α))², q on {-n..n}/n (1 bit: ±1)."""
    n = P.sym_levels(bits)
    wq = torch.where(w >= 0, alpha, -alpha) if bits == 1 else torch.round(torch.clamp(w / alpha * n, -n, n)) * alpha / n
    return (w - wq).double().pow(2).sum().item()


def grid_min(w: torch.Tensor, bits: int, k: int = 60) -> float:
    """Best objective over k geometric clip values in [mean|w|/4, 1.05·max|w|], then k more between the best one's
    neighbours."""
    lo, hi = w.abs().mean().item() / 4, 1.05 * w.abs().max().item()
    grid = [lo * (hi / lo) ** (i / (k - 1)) for i in range(k)]
    errs = [laq_error(w, a, bits) for a in grid]
    i = min(range(k), key=errs.__getitem__)
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, k - 1)]
    return min(errs[i], *(laq_error(w, a * (b / a) ** (j / (k - 1)), bits) for j in range(k)))


def table(title: str, header: list[str], rows: list[list[str]]) -> None:
    print(f"\n{title}\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tensor", default="encoder.layer.0.attention.self.query.weight")
    ap.add_argument("--quick", action="store_true", help="skip the summary over all MiniLM tensors")
    args = ap.parse_args()
    import qbench

    print(f"qbench from {qbench.__file__}")
    tensors = minilm_tensors()
    w = tensors[args.tensor]
    cols = [f"{b} bits" for b in BITS]

    rows = [["min-max (symmetric, per tensor)", *(f"{sqnr_minmax(w, b):.2f}" for b in BITS)]]
    rows += [[name, *(f"{sqnr_init(s, w, b):.2f}" for b in BITS)] for name, s in SCHEMES.items()]
    table(f"SQNR (dB) at init, {args.tensor} {tuple(w.shape)}, max|w| = {w.abs().max():.3f}", ["", *cols], rows)

    if not args.quick:
        base = {(n, b): sqnr_minmax(t, b) for n, t in tensors.items() for b in BITS}
        rows = []
        for name, s in SCHEMES.items():
            cells = []
            for b in BITS:
                margin, worst = min((sqnr_init(s, t, b) - base[n, b], n) for n, t in tensors.items())
                cells.append(f"{margin:+.2f} ({worst.replace('encoder.layer.', 'L').replace('.weight', '')})")
            rows.append([name, *cells])
        table(f"worst SQNR(init) - SQNR(min-max) in dB over {len(tensors)} MiniLM tensors", ["", *cols], rows)

    gauss = torch.randn(384 * 384, generator=torch.Generator().manual_seed(0)) * 0.05
    rows = [[label, *(f"{laq_error(x, laq_alpha(x, b).item(), b) / grid_min(x, b):.4f}" for b in range(1, 9))]
            for label, x in (("Gaussian 384x384", gauss), (args.tensor, w))]  # fmt: skip
    table("LAQ: objective at its α / grid-search optimum (D = 1)", ["", *(f"{b}b" for b in range(1, 9))], rows)


if __name__ == "__main__":
    main()
