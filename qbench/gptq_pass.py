"""The GPTQ pass (scheme=gptq's calibration, qbench.quant.gptq_scheme): quantize a model's selected weights in
GPTQ's sequential order, each layer's input Hessian measured on the model whose earlier layers are already quantized.

Stages: the selected tensors grouped by block, the module path up to its first layer index (model.layers.3,
bert.encoder.layer.0, model.decoder.layers.0, ALBERT's albert_layer_groups.0); a tensor outside any block (an
embedding, ALBERT's embedding mapping, a pooler) is a stage of its own. Stages run in the order the model first
reaches them. Per stage:
- embeddings (nn.Embedding): no input Hessian; round-to-nearest on the grid (GPTQ with H = identity);
- Linear / Conv1D: H = X X^T / n (each batch's product in float32, summed in float64) over every input position
  of every calibration batch (padding included, as qbench.calibrate's "inputs"), never keeping the activations;
  layers of one block all see the block's inputs before any of them is quantized (the GPTQ reference's default,
  not its "true sequential" option);
- then GPTQ per tensor, and the quantized values are written into the weights so later stages see them.
How a block's inputs are obtained: a block that is an element of an nn.ModuleList and runs once per forward pass
(transformer layers of BERT, GPT-2, BART, Llama) gets its inputs (the positional arguments and keyword arguments the
model called it with) once, by one forward pass stopped at the first block of its list; later blocks of the same
list take the previous block's output on those inputs (the standard GPTQ pass: one pass per block). A stage that
runs several times per forward (ALBERT's shared layer: H accumulated over all its uses, quantized once) or outside a
list runs full forward passes. At the end the original weights are put back: quantize_model attaches the results.
"""

from __future__ import annotations

import inspect
import logging
import re
import resource
import time
from collections import defaultdict
from collections.abc import Callable
from contextlib import contextmanager
from functools import partial

import torch
from torch import nn
from transformers.pytorch_utils import Conv1D

from qbench.quant.gptq import GPTQResult, gptq_quantize
from qbench.quant.schemes import as_2d

Targets = dict[str, tuple[nn.Module, list[str]]]  # qbench.quant.wiring.select
log = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised by a hook to end a forward pass early (the inputs it wanted are captured)."""


def stage_key(name: str) -> str:
    """The block of a parameter name: its path up to the first numeric component, e.g. model.layers.3.mlp.up.weight
    -> model.layers.3; a name without one is its own stage (its module's path)."""
    parts = name.split(".")
    for i, p in enumerate(parts):
        if re.fullmatch(r"\d+", p):
            return ".".join(parts[: i + 1])
    return name.rsplit(".", 1)[0]


def sequential_gptq(model: nn.Module, targets: Targets, data: list[dict], scheme,
                    fisher: dict[str, torch.Tensor] | None = None) -> dict[str, dict]:  # fmt: skip
    """{tensor name: {"gptq": GPTQResult, "tokens": positions H averages over (0: embedding)}} for every target;
    `scheme`: a qbench.quant.gptq_scheme.GPTQ; `fisher` {name: grad_sq like the weight} for weighting=fisher. The
    model's weights and training mode are as they were when it returns."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    data = [{k: v.to(device) for k, v in b.items()} for b in data]
    extra = {"use_cache": False} if "use_cache" in inspect.signature(model.forward).parameters else {}
    run = lambda b: model(**b, **extra)  # noqa: E731
    originals = {name: m.weight.detach().clone() for name, (m, _) in targets.items()}
    order, calls = _probe(model, targets, run, data[0])
    stages: dict[str, list[str]] = defaultdict(list)
    for name in sorted(targets, key=lambda n: order[n]):
        stages[stage_key(name)].append(name)
    out: dict[str, dict] = {}
    cache: tuple[nn.Module, list] | None = None  # (next block of a list, its inputs per batch)
    try:
        with torch.no_grad():
            for step, (key, names) in enumerate(stages.items()):
                t0 = time.perf_counter()
                lin = [n for n in names if not isinstance(targets[n][0], nn.Embedding)]
                block = _block(model, key) if calls.get(key) == 1 else None
                if block is not None and (cache is None or cache[0] is not block):
                    cache = (block, _capture(model, block, run, data))
                passes = _block_passes(cache) if block is not None else (run(b) for b in data)
                h = _hessians(targets, lin, passes) if lin else {}  # embeddings alone: no pass
                for name in names:
                    module, others = targets[name]
                    out[name] = _quantize(module, name, others, h.get(name), scheme, (fisher or {}).get(name))
                if block is not None:  # the quantized block's outputs are the next block's inputs
                    cache = _advance(model, key, cache)
                log.info("gptq %d/%d %s: %d tensors, %.1f s", step + 1, len(stages), key, len(names),
                         time.perf_counter() - t0)  # fmt: skip
    finally:
        for name, (m, _) in targets.items():
            with torch.no_grad():
                m.weight.copy_(originals[name])
        model.train(was_training)
    return out


def _probe(model: nn.Module, targets: Targets, run: Callable, batch: dict) -> tuple[dict[str, int], dict[str, int]]:
    """One forward pass: ({target: rank of its module's first call}, {stage key: calls of the stage's module})."""
    order: dict[str, int] = {}
    calls: dict[str, int] = defaultdict(int)

    def seen(name: str) -> Callable:
        def hook(module, args) -> None:  # returns None: the inputs stay as they are
            order.setdefault(name, len(order))

        return hook

    def count(key: str) -> Callable:
        def hook(module, args) -> None:
            calls[key] += 1

        return hook

    hooks = [m.register_forward_pre_hook(seen(name)) for name, (m, _) in targets.items()]
    for key in {stage_key(n) for n in targets}:
        if (m := _module(model, key)) is not None:
            hooks.append(m.register_forward_pre_hook(count(key)))
    try:
        with torch.no_grad():
            run(batch)
    finally:
        for h in hooks:
            h.remove()
    for name in targets:  # a tensor never called (a tied alias only): last
        order.setdefault(name, len(order))
    return order, dict(calls)


def _module(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _block(model: nn.Module, key: str) -> nn.Module | None:
    """The module at `key` when it is an element of an nn.ModuleList (a transformer layer), else None."""
    parent, _, idx = key.rpartition(".")
    lst = _module(model, parent) if parent else None
    return lst[int(idx)] if isinstance(lst, nn.ModuleList) and idx.isdigit() else None


def _capture(model: nn.Module, block: nn.Module, run: Callable, data: list[dict]) -> list[tuple[tuple, dict]]:
    """The (args, kwargs) the model calls `block` with, per batch; each forward pass stops there."""
    got: list[tuple[tuple, dict]] = []

    def hook(module, args, kwargs):
        got.append((args, kwargs))
        raise _Stop

    handle = block.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for b in data:
            try:
                run(b)
            except _Stop:
                pass
    finally:
        handle.remove()
    return got


def _block_passes(cache: tuple[nn.Module, list]):
    """The block's outputs on its cached inputs, one batch at a time (a generator)."""
    block, inputs = cache
    return (block(*args, **kwargs) for args, kwargs in inputs)


def _advance(model: nn.Module, key: str, cache: tuple[nn.Module, list]) -> tuple[nn.Module, list] | None:
    """The next block of the list and its inputs: this (quantized) block's outputs in place of its hidden states."""
    parent, _, idx = key.rpartition(".")
    lst = model.get_submodule(parent)
    if int(idx) + 1 >= len(lst):
        return None
    nxt = []
    for (args, kwargs), out in zip(cache[1], _block_passes(cache), strict=True):
        hidden = out[0] if isinstance(out, tuple | list) else out
        if args:
            nxt.append(((hidden, *args[1:]), kwargs))
        else:
            nxt.append(((), {**kwargs, "hidden_states": hidden}))
    return lst[int(idx) + 1], nxt


def _hessians(targets: Targets, names: list[str], passes) -> dict[str, tuple[torch.Tensor, int]]:
    """{name: (H = X X^T / n float64 (in, in), n)} of the Linear/Conv1D layers `names` over the forward passes that
    iterating `passes` (a generator) runs, one batch each. Layers fed the same tensor in a pass (q, k, v) share one
    accumulation."""
    sums: dict[str, list] = {}  # name -> [H sum, n] (shared lists for shared inputs)
    memo: dict[int, tuple[torch.Tensor, list]] = {}  # id(input) -> (input kept alive, its accumulator)

    def hook(module, args, name) -> None:
        x = args[0]
        if id(x) in memo and memo[id(x)][0] is x:
            acc = memo[id(x)][1]
            if name not in sums:
                sums[name] = acc
            if sums[name] is not acc:  # the same layer seeing a tensor another layer saw first: add it
                _add(sums[name], x)
            return
        acc = sums.setdefault(name, [None, 0])
        _add(acc, x)
        memo[id(x)] = (x, acc)

    hooks = [targets[n][0].register_forward_pre_hook(partial(hook, name=n)) for n in names]
    try:
        for _ in passes:
            memo.clear()  # one batch done: its inputs may go
    finally:
        for h in hooks:
            h.remove()
    return {n: (acc[0] / acc[1], acc[1]) for n, acc in sums.items()}


def _add(acc: list, x: torch.Tensor) -> None:
    """Add one batch's X^T X to a float64 sum; the product in float32 (as the GPTQ reference keeps H), one batch's
    positions at a time, so the sum over many batches loses nothing more."""
    x = x.detach().reshape(-1, x.shape[-1]).float()  # (positions, in)
    xx = (x.T @ x).double()  # (in, in)
    acc[0] = xx if acc[0] is None else acc[0].add_(xx)
    acc[1] += x.shape[0]


def _quantize(module: nn.Module, name: str, others: list[str], h: tuple[torch.Tensor, int] | None, scheme,
              fisher) -> dict:  # fmt: skip
    """GPTQ of one tensor (H = identity for embeddings and layers never called), written into its weight."""
    w = module.weight
    transposed = isinstance(module, Conv1D)
    s = scheme.for_tensor(name, module, others)
    w2d = as_2d(w.detach(), transposed)  # (rows = outputs, cols = inputs)
    grid = s.make_grid(w2d, None if fisher is None else as_2d(fisher, transposed).to(torch.float64))
    hess, n = h if h is not None else (torch.eye(w2d.shape[1], dtype=torch.float64), 0)
    with one_thread():  # thousands of small per-column ops: intra-op threads only add waits (see one_thread)
        res: GPTQResult = gptq_quantize(w2d, hess, grid, s.damp, s.block_size, s.act_order, dtype=torch.float32)
    w2d.copy_(res.q.to(w.dtype))  # the view writes into the weight: later stages see the quantized layer
    return {"gptq": res, "tokens": n}


@contextmanager
def one_thread():
    """torch's intra-op threads set to 1 inside the block, restored after. GPTQ's column loop is thousands of small
    ops, for which intra-op threads on busy cores mostly wait for each other (measured many times slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


@contextmanager
def calibration_cost():
    """Yields a dict filled on exit: {"seconds", "peak_rss_mib", "peak_rss_growth_mib"}: wall time, and the process'
    peak resident memory (getrusage ru_maxrss, Linux KiB) after the block and how much the block raised it (0 when
    the peak was reached before). ru_maxrss, not tracemalloc: torch's CPU tensors are not seen by tracemalloc."""
    out: dict = {}
    before, t0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter()
    try:
        yield out
    finally:
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        out |= {"seconds": time.perf_counter() - t0, "peak_rss_mib": after / 1024,
                "peak_rss_growth_mib": (after - before) / 1024}  # fmt: skip


def gptq_summary(stats: dict[str, dict]) -> dict:
    """The record's per-layer output errors of the GPTQ pass, relative to the layer's output energy tr(W H W^T):
    GPTQ's and round-to-nearest's on the same grid and Hessian (H = identity for embeddings: relative Frobenius)."""
    layers = []
    for name, s in stats.items():
        e = s["gptq"].stats
        sig = e["signal"] or 1.0  # an all-zero weight: errors are 0 too
        layers.append({"name": name, "tokens": s["tokens"], "gptq_rel_err": e["gptq_err"] / sig,
                       "rtn_rel_err": e["rtn_err"] / sig})  # fmt: skip
    hess = [x for x in layers if x["tokens"]]
    return {"calibration_tokens": max((x["tokens"] for x in layers), default=0),
            "layers_better_than_rtn": sum(x["gptq_rel_err"] <= x["rtn_rel_err"] for x in hess),
            "layers_with_hessian": len(hess), "layers": layers}  # fmt: skip
