"""LSQ (Esser et al. 2020), as paper B's baseline: a learned step size s per module.

Levels s·{-Qn..Qp} with Qn = 2^(b-1), Qp = 2^(b-1) - 1 (LSQ's signed grid: all 2^b codes; 2 bits = {-2,-1,0,1}·s),
s0 = 2·mean|w|/sqrt(Qp). Gradients (STE on the rounding): w gets the upstream gradient inside the range, 0 outside;
s gets g · Σ upstream · (round(w/s) - w/s inside, -Qn below, Qp above), with LSQ's scale g = 1/sqrt(numel·Qp).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant.clipped import ScaledFakeQuant, round_ste
from qbench.quant.schemes import Scheme


@dataclass(frozen=True)
class LSQ(Scheme):
    name: ClassVar[str] = "lsq"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits < 2 or (self.embed_bits or 2) < 2:
            raise QbenchError("scheme=lsq needs bits >= 2 (and embed_bits >= 2): its 1-bit grid {-1, 0} is degenerate")

    def parametrization(self, weight: torch.Tensor, transposed: bool) -> nn.Module:
        return LSQQuant(self.bits, transposed, weight)

    def overhead_bits(self, shape2d: tuple[int, int]) -> int:
        return 3 * 32


class LSQQuant(ScaledFakeQuant):
    def __init__(self, bits: int, transposed: bool, weight: torch.Tensor):
        super().__init__(bits, transposed, qn=2 ** (bits - 1), qp=2 ** (bits - 1) - 1)
        s0 = 2 * weight.detach().abs().mean().item() / math.sqrt(self.qp)
        self.s = nn.Parameter(torch.tensor(s0 or 1e-8))
        self.grad_scale = 1.0 / math.sqrt(weight.numel() * self.qp)

    def step(self, w: torch.Tensor) -> torch.Tensor:
        return self.s.abs()

    def grad_path(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        g = self.grad_scale
        s = step * g + (step - step * g).detach()  # value s, gradient scaled by g
        u = torch.clamp(w / s, -self.qn, self.qp)
        return round_ste(u, k) * s
