"""Loss-aware quantization (LAQ, Hou & Kwok 2018), as paper B's baseline.

The scale α of a module minimises the curvature-weighted quantization error Σ D ⊙ (w - α·q)², q on the symmetric
grid {-n..n}/n (2 bits: ternary; 1 bit: ±1), with D = sqrt(v̂) + ε the diagonal curvature estimate from Adam's
second moment of the latent weight (bias-corrected exp_avg_sq). Before the optimizer's first step (no second
moments yet) D = 1, the plain least-squares fit. `LAQCallback` (from `LAQ.train_callbacks`) copies D from the
optimizer after every step. The latent weight gets the upstream gradient unchanged (STE); α is not a parameter.

The fit (`scaled.fit_step`) searches α directly on this objective, to a relative resolution of 0.4 %, with
α <= max|w|. The first forward starts from the best of a coarse grid of clip values (α0 = the least-squares clip);
every later forward starts from the previous α (warm start: 7 error evaluations when α does not move), so α
tracks the weights during training. 1 bit: α = Σ D|w| / Σ D in closed form. The paper's alternating steps
(q for fixed α, then α = Σ D w q / Σ D q²) are not used: from a wide α each is nearly a fixed point at >= 3 bits
(the grid is fine, so refitting α to fixed levels barely moves it) and they stalled up to 18x above the optimum.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from transformers import TrainerCallback

from qbench.errors import QbenchError
from qbench.quant import primitives as P
from qbench.quant.scaled import ScaledFakeQuant, fit_step
from qbench.quant.schemes import Scheme


@dataclass(frozen=True)
class LAQ(Scheme):
    name: ClassVar[str] = "laq"
    eps: float = 1.0e-8  # ε of D = sqrt(v̂) + ε (Adam's)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.eps, (int, float)) or not self.eps > 0:
            raise QbenchError(f"scheme.eps must be > 0, got {self.eps!r}")

    def parametrization(self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats=None) -> nn.Module:
        return LAQQuant(self.bits, transposed, self.eps)

    def train_callbacks(self) -> list:
        return [LAQCallback()]


def laq_step(w: torch.Tensor, bits: int, d: torch.Tensor | None = None, start: float | None = None) -> float:
    """Step α/n of the α minimising Σ d (w - α q(w/α))² (d None = 1), warm-started from step `start` if given."""
    if bits == 1:  # levels ±α: Σ d (|w| - α)² is minimal at the d-weighted mean of |w|
        a = w.detach().abs().float().reshape(-1)
        d = None if d is None else d.detach().reshape(-1).float()
        return (a.mean() if d is None else a @ d / d.sum()).item() or 1e-8
    n = P.sym_levels(bits)
    return fit_step(w, n, n, d, start)


def laq_alpha(w: torch.Tensor, bits: int, d: torch.Tensor | None = None, start: float | None = None) -> torch.Tensor:
    """α (0-d float32 tensor) minimising Σ d (w - α q(w/α))², warm-started from α = `start` if given."""
    n = P.sym_levels(bits)
    return torch.tensor(n * laq_step(w, bits, d, None if start is None else start / n))


class LAQQuant(ScaledFakeQuant):
    def __init__(self, bits: int, transposed: bool, eps: float):
        super().__init__(bits, transposed)
        self.eps = eps
        self.curvature: torch.Tensor | None = None  # D, like the weight; None = 1 (before the first step)
        self.last_step: float | None = None  # the previous fit's step α/n: the next fit's warm start

    def step(self, w: torch.Tensor) -> torch.Tensor:
        self.last_step = laq_step(w, self.bits, self.curvature, self.last_step)
        return torch.tensor(self.last_step, dtype=w.dtype, device=w.device)

    def learned(self, latent: torch.Tensor) -> dict[str, float]:
        return {"alpha": P.sym_levels(self.bits) * self.last_step} if self.last_step is not None else {}

    def grad_path(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return w  # straight through

    def grads(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor, grad: torch.Tensor):
        return grad, None  # straight through; the step is fitted, not learned

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
