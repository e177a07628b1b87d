"""Module-wise dynamic scaling (MDS, paper B: Tao et al. 2022): per module α = γ · mean|w| with γ learned.

Weights are clipped to [-α, α] and quantized symmetrically, q = α·k/n with k = round(clip(w, -α, α)·n/α)
(2 bits: n = 1, ternary). mean|w| is a statistic of the current latent weight (no gradient through it).
Gradient of q w.r.t. α, with the STE on the rounding (dk/du = 1):
    |w| >= α:  q = ±α                      -> dq/dα = sign(w)
    |w| <  α:  q = (α/n)·round(w·n/α)      -> dq/dα = k/n + (α/n)·(-w·n/α²) = k/n - w/α = (q - w)/α
so unlike PACT (first line only) γ also learns from the unclipped weights through the scale; dq/dγ = dq/dα·mean|w|.
The latent weight gets the upstream gradient where |w| < α and 0 where clipped.

γ0 (`init`): mse (default) = the least-squares clip α0 (`scaled.fit_step`, α0 <= max|w|) over mean|w|, so the
quantizer starts no worse than symmetric min-max; minmax = max|w|/mean|w|; lsq = 2·sqrt(n) (LSQ's range: 2 at
2 bits, 5.3 at 4, 22.5 at 8, a clip beyond every weight of most tensors at 8 bits). `gamma_init` overrides `init`.
1 bit: γ0 = 1 (α0 = mean|w|).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant import primitives as P
from qbench.quant.scaled import ScaledFakeQuant, check_init, init_step, round_ste
from qbench.quant.schemes import Scheme


@dataclass(frozen=True)
class MDS(Scheme):
    name: ClassVar[str] = "mds"
    learns_range: ClassVar[bool] = True  # a learned range per module: train.qat.quantizer_lr applies
    init: str = "mse"  # γ0: mse (least-squares clip / mean|w|) | minmax (max|w| / mean|w|) | lsq (2·sqrt(n))
    gamma_init: float | None = None  # γ0, overriding `init`; None = use `init`

    def __post_init__(self) -> None:
        super().__post_init__()
        check_init(self.init)
        if self.gamma_init is not None and not self.gamma_init > 0:
            raise QbenchError(f"scheme.gamma_init must be > 0 or null, got {self.gamma_init!r}")

    def parametrization(self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats=None) -> nn.Module:
        if self.gamma_init is not None:
            gamma = self.gamma_init
        else:  # γ0 = α0 / mean|w|
            n = P.sym_levels(self.bits)
            gamma = n * init_step(weight, self.bits, self.init, n, n) / (weight.detach().abs().mean().item() or 1)
        return MDSQuant(self.bits, transposed, gamma)


class MDSQuant(ScaledFakeQuant):
    range_params = ("gamma",)

    def __init__(self, bits: int, transposed: bool, gamma: float):
        super().__init__(bits, transposed)
        self.gamma = nn.Parameter(torch.tensor(float(gamma)))

    def alpha(self, w: torch.Tensor) -> torch.Tensor:
        return self.gamma.abs() * w.detach().abs().mean().clamp_min(1e-12)

    def step(self, w: torch.Tensor) -> torch.Tensor:
        return self.alpha(w) / P.sym_levels(self.bits)

    def learned(self, latent: torch.Tensor) -> dict[str, float]:
        return {"gamma": float(self.gamma.abs()), "alpha": float(self.alpha(latent))}

    def grad_path(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        a, n = self.alpha(w), P.sym_levels(self.bits)
        wc = torch.where(w >= a, a, torch.where(w <= -a, -a, w))
        return round_ste(wc / a * n, k) * (a / n)

    def grads(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor, grad: torch.Tensor):
        # grad_path's gradients (module docstring): w where |w| < α; dq/dα = k/n - w/α inside, k/n (= ±1) clipped
        a, n = self.alpha(w).detach(), P.sym_levels(self.bits)
        clipped = (w >= a) | (w <= -a)
        gw = grad.masked_fill(clipped, 0)
        ga = (grad * k).sum() / n - (gw * w).sum() / a
        return gw, ga * n  # the step is α/n
