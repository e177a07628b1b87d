"""Calibration: the statistics a data-aware scheme declares (qbench.quant.schemes.Calibration), measured once on
the model as it is about to be quantized, with the task kind's own training data and collator.

The first `batches` batches of the training split, in order (batch size train.batch_size), in eval mode (no
dropout). Per quantized tensor, under its first parameter name (qbench.quant.wiring.select):
- "grad_sq": (like the weight) mean over the batches of the squared gradient of the batch's mean task loss: the
  diagonal of the empirical Fisher, as Fisher-weighted quantizers use it;
- "inputs": (tokens, in_features) the inputs of the Linear/Conv1D layer owning the weight, every position of every
  batch (padding included); embeddings have none.
- "hessian": scheme=gptq's pass over the same batches (qbench.gptq_pass), after "grad_sq" when both are asked:
  {"gptq": GPTQResult, "tokens": positions} per tensor.
The model's weights, gradients and training mode are left as they were.
"""

from __future__ import annotations

import inspect
from collections import defaultdict

import torch
from torch import nn
from torch.utils.data import DataLoader
from transformers.pytorch_utils import Conv1D

from qbench.gptq_pass import sequential_gptq
from qbench.quant.schemes import Calibration
from qbench.quant.wiring import select

LABELS = ("label", "labels", "label_ids")  # label columns a collator passes on (DataCollatorWithPadding renames)


def calibrate(model: nn.Module, wanted: Calibration, ds, collator, batch_size: int, include: list[str],
              exclude: list[str], scheme=None) -> dict[str, dict]:  # fmt: skip
    """The statistics `wanted` of the tensors quantize_model will quantize (include/exclude), over the first
    `wanted.batches` batches of the training split `ds`; `scheme`: the scheme asking (the "hessian" pass needs it)."""
    targets = select(model, list(include), list(exclude))
    if scheme is not None and scheme.only is not None:  # scheme.only: the pass quantizes what quantize_model will
        targets = {name: t for name, t in targets.items() if scheme.quantizes(name, t[1])}
    data = batches(model, ds, collator, batch_size, wanted.batches)
    rest = tuple(s for s in wanted.stats if s != "hessian")
    out = collect(model, targets, data, Calibration(rest, wanted.batches)) if rest else {name: {} for name in targets}
    if "hessian" in wanted.stats:
        fisher = {name: s["grad_sq"] for name, s in out.items() if "grad_sq" in s}
        for name, s in sequential_gptq(model, targets, data, scheme, fisher).items():
            out[name] |= s
    return out


def batches(model: nn.Module, ds, collator, batch_size: int, n: int) -> list[dict[str, torch.Tensor]]:
    """The first n batches of a tokenized dataset, in order, as the model reads them: columns its forward does not
    take (raw text, ids) are dropped, as HF Trainer does."""
    takes = set(inspect.signature(model.forward).parameters) | set(LABELS)
    ds = ds.select(range(min(len(ds), n * batch_size)))
    ds = ds.remove_columns([c for c in ds.column_names if c not in takes])
    return list(DataLoader(ds, batch_size=batch_size, collate_fn=collator, shuffle=False))


def collect(model: nn.Module, targets: dict[str, tuple[nn.Module, list[str]]], data: list[dict],
            wanted: Calibration) -> dict[str, dict[str, torch.Tensor]]:  # fmt: skip
    """{tensor name: {statistic: tensor}} of `wanted.stats` over the batches `data` (see the module docstring);
    `targets` as qbench.quant.wiring.select returns them."""
    device, was_training = next(model.parameters()).device, model.training
    inputs: dict[str, list[torch.Tensor]] = defaultdict(list)
    hooks = [m.register_forward_pre_hook(_keep_input(inputs[name])) for name, (m, _) in targets.items()
             if "inputs" in wanted.stats and isinstance(m, nn.Linear | Conv1D)]  # fmt: skip
    grad_sq = (
        {name: torch.zeros_like(m.weight) for name, (m, _) in targets.items()} if "grad_sq" in wanted.stats else {}
    )
    saved = {name: m.weight.grad for name, (m, _) in targets.items()}
    model.eval()
    try:
        for batch in data:
            batch = {k: v.to(device) for k, v in batch.items()}
            with torch.set_grad_enabled(bool(grad_sq)):
                loss = model(**batch).loss
            if grad_sq:
                model.zero_grad(set_to_none=True)
                loss.backward()
                for name, (m, _) in targets.items():
                    grad_sq[name] += m.weight.grad.detach().square() / len(data)
    finally:
        for h in hooks:
            h.remove()
        model.zero_grad(set_to_none=True)
        for name, (m, _) in targets.items():
            m.weight.grad = saved[name]
        model.train(was_training)
    out: dict[str, dict[str, torch.Tensor]] = {name: {} for name in targets}
    for name, g in grad_sq.items():
        out[name]["grad_sq"] = g
    for name, xs in inputs.items():
        out[name]["inputs"] = torch.cat(xs)
    return out


def _keep_input(into: list[torch.Tensor]):
    """A forward pre-hook appending the layer's input, flattened to (positions, in_features), to `into`."""

    def hook(module: nn.Module, args: tuple) -> None:
        x = args[0].detach()
        into.append(x.reshape(-1, x.shape[-1]))

    return hook
