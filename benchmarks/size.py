"""Benchmark: bytes on disk of packed low-bit checkpoints vs fp32, and paper B's ratios (Tao et al. 2022).

For GPT-2 small and BART-base (full shapes from conf/model/{gpt2,bart}.yaml `arch:`, random weights, offline)
x k-means / linear (asymmetric, per row) x 2 / 4 / 8 bits: the same logic as `qbench size`, i.e. quantize with the
model yaml's include/exclude, write the packed safetensors file to a temporary folder and stat it. Paper B reports
14.4x (GPT-2) and 13.4x (BART) at 2 bits.

    python benchmarks/size.py [--models gpt2,bart] [--schemes kmeans,linear] [--bits 2,4,8]
"""

from __future__ import annotations

import argparse
import copy
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PAPER_B_2BIT = {"gpt2": 14.4, "bart": 13.4}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="gpt2,bart")
    ap.add_argument("--schemes", default="kmeans,linear")
    ap.add_argument("--bits", default="2,4,8")
    args = ap.parse_args()

    from hydra import compose, initialize_config_module
    from transformers.utils import logging as hf_logging

    import qbench.cli  # noqa: F401  (registers the config's resolvers)
    from qbench.cell import build_scheme
    from qbench.config import model_schema
    from qbench.models import arch_model
    from qbench.size import size_of_model

    hf_logging.set_verbosity_error()
    head = (f"{'model':6s} {'scheme':7s} {'bits':>4s} {'eff.bits':>8s} {'quantized MB':>12s} {'fp MB':>7s} "
            f"{'packed file B':>14s} {'fp32 file B':>13s} {'ratio_fp32':>10s} {'ratio_paper':>11s} {'paper B':>7s} "
            f"{'secs':>5s}")  # fmt: skip
    rows = []
    with initialize_config_module("qbench.conf", version_base="1.3"):
        for model_name in args.models.split(","):
            base = None
            for scheme in args.schemes.split(","):
                for bits in args.bits.split(","):
                    cfg = compose("config", overrides=[f"model={model_name}", f"scheme={scheme}", f"bits={bits}"])
                    if base is None:
                        base = arch_model(model_schema(cfg.model), cfg.seed)
                    t0 = time.perf_counter()
                    m = cfg.model
                    s, _ = size_of_model(copy.deepcopy(base), build_scheme(cfg), m.include, m.exclude, m.name)
                    paper = PAPER_B_2BIT.get(model_name) if bits == "2" else None
                    rows.append(
                        f"{model_name:6s} {scheme:7s} {bits:>4s} {s['effective_bits']:8.4f} "
                        f"{(s['code_bytes'] + s['side_bytes']) / 1e6:12.2f} {s['fp_bytes'] / 1e6:7.2f} "
                        f"{s['packed_bytes']:14,d} {s['fp32_bytes']:13,d} {s['ratio_fp32']:10.2f} "
                        f"{s['ratio_paper']:11.2f} {'' if paper is None else f'{paper:.1f}':>7s} "
                        f"{time.perf_counter() - t0:5.0f}"
                    )
                    print(rows[-1] if len(rows) > 1 else f"{head}\n{rows[-1]}", flush=True)
    print("\nratio_fp32 = fp32 safetensors file bytes / packed safetensors file bytes (on disk, headers included);")
    print("ratio_paper = paper B's convention: word embedding + every Linear/Conv1D weight at b bits, rest fp32;")
    print("eff.bits = (packed codes + codebooks or fp32 scale/offset per row) bits per quantized weight.")


if __name__ == "__main__":
    main()
