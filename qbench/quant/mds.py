"""Module-wise dynamic scaling (MDS, paper B: Tao et al. 2022): per module α = γ · mean|w| with γ learned.

Weights are clipped to [-α, α] and quantized symmetrically, q = α·k/n with k = round(clip(w, -α, α)·n/α)
(2 bits: n = 1, ternary). mean|w| is a statistic of the current latent weight (no gradient through it).
Gradient of q w.r.t. α, with the STE on the rounding (dk/du = 1):
    |w| >= α:  q = ±α                      -> dq/dα = sign(w)
    |w| <  α:  q = (α/n)·round(w·n/α)      -> dq/dα = k/n + (α/n)·(-w·n/α²) = k/n - w/α = (q - w)/α
so unlike PACT (first line only) γ also learns from the unclipped weights through the scale; dq/dγ = dq/dα·mean|w|.
The latent weight gets the upstream gradient where |w| < α and 0 where clipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant import primitives as P
from qbench.quant.clipped import ScaledFakeQuant, lsq_init_clip, round_ste
from qbench.quant.schemes import Scheme


@dataclass(frozen=True)
class MDS(Scheme):
    name: ClassVar[str] = "mds"
    gamma_init: float | None = None  # γ0; None = 2·sqrt(n) (LSQ's initial range: 2 at 2 bits, 5.3 at 4, 22.5 at 8)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.gamma_init is not None and not self.gamma_init > 0:
            raise QbenchError(f"scheme.gamma_init must be > 0 or null, got {self.gamma_init!r}")

    def parametrization(self, weight: torch.Tensor, transposed: bool) -> nn.Module:
        mean = weight.detach().abs().mean().item()
        gamma = self.gamma_init if self.gamma_init is not None else lsq_init_clip(weight, self.bits) / (mean or 1)
        return MDSQuant(self.bits, transposed, gamma)

    def overhead_bits(self, shape2d: tuple[int, int]) -> int:
        return 3 * 32


class MDSQuant(ScaledFakeQuant):
    def __init__(self, bits: int, transposed: bool, gamma: float):
        super().__init__(bits, transposed)
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))

    def alpha(self, w: torch.Tensor) -> torch.Tensor:
        return self.gamma.abs() * w.detach().abs().mean().clamp_min(1e-12)

    def step(self, w: torch.Tensor) -> torch.Tensor:
        return self.alpha(w) / P.sym_levels(self.bits)

    def grad_path(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        a, n = self.alpha(w), P.sym_levels(self.bits)
        wc = torch.where(w >= a, a, torch.where(w <= -a, -a, w))
        return round_ste(wc / a * n, k) * (a / n)
