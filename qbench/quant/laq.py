"""Loss-aware quantization (LAQ, Hou & Kwok 2018), as paper B's baseline.

The scale α of a module minimises the curvature-weighted quantization error Σ D ⊙ (w - α·q)², q on the symmetric
grid {-n..n}/n (2 bits: ternary), with D = sqrt(v̂) + ε the diagonal curvature estimate from Adam's second moment
of the latent weight (bias-corrected exp_avg_sq). Alternating minimisation from α0 = 2·sqrt(n)·mean|w| (LSQ's range):
    q = round(clip(w/α, -1, 1)·n)/n            (the nearest level: D > 0 does not change an element's projection)
    α = Σ D w q / Σ D q²                        (closed form for fixed q)
`iters` steps, deterministic in (w, D). Before the optimizer's first step (no second moments yet) D = 1, which is
the plain least-squares fit. `LAQCallback` (from `LAQ.train_callbacks`) copies D from the optimizer after every
step. The latent weight gets the upstream gradient unchanged (STE); α is not a parameter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import TrainerCallback

from qbench.errors import QbenchError
from qbench.quant import primitives as P
from qbench.quant.clipped import ScaledFakeQuant
from qbench.quant.schemes import Scheme


@dataclass(frozen=True)
class LAQ(Scheme):
    name: ClassVar[str] = "laq"
    iters: int = 3  # alternating (projection, closed-form α) steps per forward
    eps: float = 1.0e-8  # ε of D = sqrt(v̂) + ε (Adam's)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.iters, int) or self.iters < 1:
            raise QbenchError(f"scheme.iters must be a positive integer, got {self.iters!r}")

    def parametrization(self, weight: torch.Tensor, transposed: bool) -> nn.Module:
        return LAQQuant(self.bits, transposed, self.iters, self.eps)

    def overhead_bits(self, shape2d: tuple[int, int]) -> int:
        return 3 * 32

    def train_callbacks(self) -> list:
        return [LAQCallback()]


def laq_alpha(w: torch.Tensor, bits: int, d: torch.Tensor | None = None, iters: int = 3) -> torch.Tensor:
    """α minimising Σ d (w - α q(w/α))² by `iters` alternating steps (d None = 1); 0-d tensor."""
    w = w.detach().reshape(-1).float()
    d = torch.ones_like(w) if d is None else d.detach().reshape(-1).float()
    n = P.sym_levels(bits)
    alpha = 2.0 * n**0.5 * w.abs().mean()
    for _ in range(iters):
        q = P.sym_round(w / alpha * n, bits) / n if bits > 1 else P.sym_round(w, 1)
        den = (d * q * q).sum()
        if den <= 0:  # every weight rounds to 0: shrink the range
            alpha = alpha / 2
            continue
        alpha = (d * w * q).sum() / den
    return alpha.clamp_min(1e-12)


class LAQQuant(ScaledFakeQuant):
    def __init__(self, bits: int, transposed: bool, iters: int, eps: float):
        super().__init__(bits, transposed)
        self.iters, self.eps = iters, eps
        self.curvature: torch.Tensor | None = None  # D, like the weight; None = 1 (before the first step)

    def step(self, w: torch.Tensor) -> torch.Tensor:
        return laq_alpha(w, self.bits, self.curvature, self.iters).to(w.dtype) / P.sym_levels(self.bits)

    def grad_path(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return w  # straight through

    @torch.no_grad()
    def set_curvature(self, exp_avg_sq: torch.Tensor, step: int, beta2: float) -> None:
        v_hat = exp_avg_sq / (1 - beta2**step)
        self.curvature = v_hat.sqrt().add_(self.eps)


def laq_latents(model: nn.Module) -> list[tuple[LAQQuant, nn.Parameter]]:
    """(LAQ parametrization, its latent weight) of every LAQ-quantized tensor of the model, once each."""
    seen, out = set(), []
    for module in model.modules():
        plist = getattr(getattr(module, "parametrizations", None), "weight", None)
        if plist is not None and isinstance(plist[0], LAQQuant) and id(plist[0]) not in seen:
            seen.add(id(plist[0]))
            out.append((plist[0], plist.original))
    return out


class LAQCallback(TrainerCallback):
    """After each optimizer step, hand Adam's second moments of the latent weights to the LAQ quantizers."""

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kwargs):
        if model is None or optimizer is None:
            return
        opt = getattr(optimizer, "optimizer", optimizer)  # accelerate's wrapper
        beta2 = {id(p): g.get("betas", (0.9, 0.999))[1] for g in opt.param_groups for p in g["params"]}
        for quant, latent in laq_latents(model):
            st = opt.state.get(latent, {})
            if "exp_avg_sq" in st:
                quant.set_curvature(st["exp_avg_sq"], int(st["step"]), beta2.get(id(latent), 0.999))
