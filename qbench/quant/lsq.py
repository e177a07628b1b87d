"""LSQ (Esser et al. 2020), as paper B's baseline: a learned step size s per module.

Levels s·{-Qn..Qp} with Qn = 2^(b-1), Qp = 2^(b-1) - 1 (LSQ's signed grid: all 2^b codes; 2 bits = {-2,-1,0,1}·s),
s0 (`init`): mse (default) = the least-squares step (`scaled.fit_step`, Qp·s0 <= max|w|), never worse than
min-max; minmax = max|w|/Qp; lsq = LSQ's published 2·mean|w|/sqrt(Qp) (a range of 18σ at 8 bits for Gaussian
weights, beyond every weight of most tensors). Gradients (STE on the rounding): w gets the upstream gradient
inside the range, 0 outside; s gets g · Σ upstream · (round(w/s) - w/s inside, -Qn below, Qp above), with LSQ's
scale g = 1/sqrt(numel·Qp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant.scaled import ScaledFakeQuant, check_init, init_step, round_ste
from qbench.quant.schemes import Scheme


@dataclass(frozen=True)
class LSQ(Scheme):
    name: ClassVar[str] = "lsq"
    learns_range: ClassVar[bool] = True  # a learned range per module: train.qat.quantizer_lr applies
    init: str = "mse"  # s0: mse (least-squares step) | minmax (max|w| / Qp) | lsq (2·mean|w| / sqrt(Qp))

    def __post_init__(self) -> None:
        super().__post_init__()
        check_init(self.init)
        if self.bits < 2 or (self.embed_bits or 2) < 2:
            raise QbenchError("scheme=lsq needs bits >= 2 (and embed_bits >= 2): its 1-bit grid {-1, 0} is degenerate")

    def parametrization(self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats=None) -> nn.Module:
        return LSQQuant(self.bits, transposed, weight, self.init)


class LSQQuant(ScaledFakeQuant):
    range_params = ("s",)

    def __init__(self, bits: int, transposed: bool, weight: torch.Tensor, init: str = "mse"):
        super().__init__(bits, transposed, qn=2 ** (bits - 1), qp=2 ** (bits - 1) - 1)
        self.s = nn.Parameter(torch.tensor(init_step(weight, bits, init, self.qn, self.qp)))
        self.grad_scale = 1.0 / math.sqrt(weight.numel() * self.qp)

    def step(self, w: torch.Tensor) -> torch.Tensor:
        return self.s.abs()

    def learned(self, latent: torch.Tensor) -> dict[str, float]:
        return {"s": float(self.s.abs())}

    def grad_path(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        g = self.grad_scale
        s = step * g + (step - step * g).detach()  # value s, gradient scaled by g
        u = torch.clamp(w / s, -self.qn, self.qp)
        return round_ste(u, k) * s

    def grads(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor, grad: torch.Tensor):
        u = w / step
        outside = (u < -self.qn) | (u > self.qp)  # torch.clamp passes the gradient at the bounds themselves
        gw = grad.masked_fill(outside, 0)
        gs = (grad * k).sum() - (gw * u).sum()  # dq/ds = k - w/s inside, k (= -Qn or Qp) outside
        return gw, gs * self.grad_scale
