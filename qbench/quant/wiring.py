"""Attach a scheme to a model: `quantize_model(model, scheme, include, exclude)`.

Each selected weight gets a torch parametrization, so `module.weight` is the quantized tensor in every forward
pass while the optimizer trains what the scheme exposes (latent weights for STE schemes, centroids for k-means).
A tensor shared by several modules (ALBERT's shared layers, tied embeddings) is quantized once.
"""

from __future__ import annotations

import fnmatch
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from torch.nn.utils import parametrize
from transformers.pytorch_utils import Conv1D

from qbench.errors import QbenchError
from qbench.quant.diagnostics import code_layout, summarise, tensor_diagnostics
from qbench.quant.packing import side_bits
from qbench.quant.primitives import act_fake_quant
from qbench.quant.schemes import Scheme

QUANTIZABLE = (nn.Linear, nn.Embedding, Conv1D)
log = logging.getLogger(__name__)


@dataclass
class TensorReport:
    name: str  # parameter name, e.g. bert.encoder.layer.0.attention.self.query.weight
    shape: list[int]
    numel: int
    sqnr_db: float
    overhead_bits: int  # side tensors of the packed state (codebook, scales...), qbench.quant.packing.side_bits
    shared_with: list[str] = field(default_factory=list)  # other names of the same tensor
    bits: int | None = None  # this tensor's bits (Scheme.for_tensor: bits_by, embed_bits); None = the scheme's


@dataclass
class QuantReport:
    scheme: dict
    include: list[str]
    exclude: list[str]
    tensors: list[TensorReport]
    total_params: int  # unique parameters of the model
    seconds: float
    diagnostics: list[dict] = field(default_factory=list)  # per tensor, qbench.quant.diagnostics.tensor_diagnostics

    @property
    def quantized_params(self) -> int:
        return sum(t.numel for t in self.tensors)

    def summary(self) -> dict:
        """Scheme details for the record: counts, share, effective bits and per-tensor SQNR."""
        q = self.quantized_params
        bits = self.scheme["bits"]
        over = sum(t.overhead_bits for t in self.tensors)
        return {
            **self.scheme,
            "include": self.include,
            "exclude": self.exclude,
            "quantized_tensors": len(self.tensors),
            "quantized_params": q,
            "total_params": self.total_params,
            "quantized_share": q / self.total_params if self.total_params else 0.0,
            # codes plus codebooks / scales, per quantized weight
            "effective_bits": (sum((t.bits or bits) * t.numel for t in self.tensors) + over) / q if q else None,
            "shared_tensors": {t.name: t.shared_with for t in self.tensors if t.shared_with},
            "layers": [asdict(t) for t in self.tensors],
            "quantize_seconds": self.seconds,
            **({"diagnostics": summarise(self.diagnostics)} if self.diagnostics else {}),  # codebook usage, SQNR
        }


def select(model: nn.Module, include: list[str], exclude: list[str]) -> dict[str, tuple[nn.Module, list[str]]]:
    """Weights to quantize: {first parameter name: (module, other names of that same tensor)}.

    A weight of a Linear/Embedding/Conv1D module is selected when its name matches an `include` pattern and no
    `exclude` pattern (fnmatch). Biases and LayerNorm are never selected (not those module types' `weight`).
    """
    chosen: dict[int, tuple[str, nn.Module, list[str]]] = {}
    for mod_name, module in model.named_modules(remove_duplicate=False):
        if not isinstance(module, QUANTIZABLE) or parametrize.is_parametrized(module, "weight"):
            continue
        name = f"{mod_name}.weight" if mod_name else "weight"
        if not any(fnmatch.fnmatchcase(name, p) for p in include) or any(fnmatch.fnmatchcase(name, p) for p in exclude):
            continue
        key = id(module.weight)
        if key in chosen:
            if chosen[key][1] is not module:  # same tensor, another module (tied weights)
                chosen[key][2].append(name)
            elif name not in chosen[key][2] and name != chosen[key][0]:  # same module reached twice (ALBERT)
                chosen[key][2].append(name)
            continue
        chosen[key] = (name, module, [])
    # A tied copy outside `include` (GPT-2's lm_head, BART's embed_tokens/lm_head = model.shared) is the same tensor:
    # it must see the same quantized values, else it keeps computing with the full-precision latent weight.
    for mod_name, module in model.named_modules(remove_duplicate=False):
        if isinstance(module, QUANTIZABLE) and not parametrize.is_parametrized(module, "weight"):
            entry, name = chosen.get(id(module.weight)), f"{mod_name}.weight" if mod_name else "weight"
            if entry and entry[1] is not module and name not in entry[2]:
                entry[2].append(name)
    return {name: (module, others) for name, module, others in chosen.values()}


def quantize_model(
    model: nn.Module, scheme: Scheme, include: list[str], exclude: list[str], stats: Mapping[str, dict] | None = None
) -> QuantReport:
    """Quantize the selected weights of `model` in place with `scheme`; returns what was done. `stats`: the
    calibration statistics per tensor name (qbench.calibrate), when the scheme asked for them."""
    t0 = time.perf_counter()
    targets = select(model, list(include), list(exclude))
    targets = {name: t for name, t in targets.items() if scheme.quantizes(name, t[1])}  # scheme.only, if set
    if not targets:
        only = f" scheme.only={scheme.only}" if scheme.only is not None else ""
        raise QbenchError(f"no weight matches include={list(include)} exclude={list(exclude)}{only}")
    reports, diagnostics = [], []
    for name, (module, others) in targets.items():
        w = module.weight
        transposed = isinstance(module, Conv1D)
        s = scheme.for_tensor(name, module, others)  # its bits: bits_by, else embed_bits (embeddings), else bits
        p = s.parametrization(w.detach(), transposed, name=name, stats=(stats or {}).get(name))
        p = p.to(w.device)  # k-means codebooks are fitted on the CPU
        with torch.no_grad():
            wq = p(w.detach())
        parametrize.register_parametrization(module, "weight", p, unsafe=True)
        for other in others:  # a tied tensor in another module: same parametrization, same codes
            mod = model.get_submodule(other.rsplit(".", 1)[0])
            if mod is not module and not parametrize.is_parametrized(mod, "weight"):
                parametrize.register_parametrization(mod, "weight", p, unsafe=True)
        if not s.latent_trained:  # the latent tensor is no longer used: do not train it
            module.parametrizations.weight.original.requires_grad_(False)
        state = p.packed_state(w.detach())
        overhead = side_bits(state)  # what the packer stores besides the codes
        diag = tensor_diagnostics(name, state["codes"], code_layout(p, w.detach(), s.bits), w, wq, transposed)
        # diag's SQNR is primitives.sqnr_db(w, wq), same arithmetic, one pass fewer
        reports.append(TensorReport(name, list(w.shape), w.numel(), diag["sqnr_db"], overhead, others, s.bits))
        diagnostics.append(diag)
    described = scheme.describe()
    if getattr(scheme, "act_bits", None):  # activation fake-quant on the inputs of the quantized Linear/Conv1D
        hooked = quantize_activations(model, [n for t in reports for n in (t.name, *t.shared_with)], scheme.act_bits)
        log.info("act_bits=%d: inputs of %d Linear/Conv1D modules fake-quantized per token", scheme.act_bits, hooked)
        described["act_granularity"] = ActFakeQuant.granularity  # the record says how activation ranges are taken
    total = sum(p.numel() for p in {id(p): p for p in _all_tensors(model)}.values())
    seconds = time.perf_counter() - t0
    return QuantReport(described, list(include), list(exclude), reports, total, seconds, diagnostics)


class ActFakeQuant(nn.Module):
    """Forward pre-hook: the layer's input x (..., in_features) -> symmetric fake-quantized x with one dynamic
    range per token (primitives.act_fake_quant), value exact, gradient exactly 1 to x (straight-through).

    Per token, not per tensor: a token's quantized input depends on that token only, so an example's outputs do
    not change with its batch-mates, the batch size or padding."""

    granularity = "token"  # recorded as scheme.act_granularity

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, module: nn.Module, args: tuple) -> tuple:
        x = args[0]
        q = act_fake_quant(x.detach(), self.bits)
        return (q + (x - x.detach()), *args[1:])


def quantize_activations(model: nn.Module, weight_names: list[str], bits: int) -> int:
    """Register ActFakeQuant on the Linear/Conv1D modules owning `weight_names` (once per module); returns how many."""
    done = set()
    for name in weight_names:
        mod = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
        if isinstance(mod, nn.Linear | Conv1D) and id(mod) not in done:
            done.add(id(mod))
            mod.register_forward_pre_hook(ActFakeQuant(bits))
    return len(done)


def _all_tensors(model: nn.Module):
    """Every distinct stored tensor of the model (latent weights count once, quantizer parameters not)."""
    for name, p in model.named_parameters(remove_duplicate=True):
        if ".parametrizations." in name and not name.endswith(".original"):
            continue
        yield p
