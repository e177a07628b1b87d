"""PACT (Choi et al. 2018) for weights, as paper B's baseline: a learned clipping value α per module.

Weights are clipped to [-α, α] and quantized symmetrically (α·{-n..n}/n, 2 bits = ternary) with the STE. PACT's
gradient: the latent weight gets the upstream gradient where |w| < α (0 where clipped); α gets sign(w) times the
upstream gradient only from the clipped weights (|w| >= α): d clip(w, -α, α) / dα.

α0 (`init`): mse (default) = the clip minimising the quantization error Σ (w - q)² (`scaled.fit_step`, α0 <= max|w|),
so the quantizer starts no worse than symmetric min-max and, with weights at or beyond α0, α gets a gradient from
the first step; minmax = max|w|; lsq = 2·sqrt(n)·mean|w| (LSQ's range: 18σ at 8 bits for Gaussian weights, beyond
every weight of most tensors, where dL/dα = 0 and α never moves). `alpha_init` (α0 = alpha_init·mean|w|)
overrides `init`. 1 bit: α0 = mean|w|.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant import primitives as P
from qbench.quant.scaled import ScaledFakeQuant, check_init, init_step
from qbench.quant.schemes import Scheme


@dataclass(frozen=True)
class PACT(Scheme):
    name: ClassVar[str] = "pact"
    learns_range: ClassVar[bool] = True  # a learned range per module: train.qat.quantizer_lr applies
    init: str = "mse"  # α0: mse (least-squares clip) | minmax (max|w|) | lsq (2·sqrt(n)·mean|w|)
    alpha_init: float | None = None  # α0 = alpha_init · mean|w|, overriding `init`; None = use `init`

    def __post_init__(self) -> None:
        super().__post_init__()
        check_init(self.init)
        if self.alpha_init is not None and not self.alpha_init > 0:
            raise QbenchError(f"scheme.alpha_init must be > 0 or null, got {self.alpha_init!r}")

    def parametrization(self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats=None) -> nn.Module:
        n = P.sym_levels(self.bits)
        if self.alpha_init is not None:
            alpha = self.alpha_init * weight.detach().abs().mean().item()
        else:
            alpha = n * init_step(weight, self.bits, self.init, n, n)
        return PACTQuant(self.bits, transposed, alpha or 1e-8)


class PACTQuant(ScaledFakeQuant):
    range_params = ("alpha",)

    def __init__(self, bits: int, transposed: bool, alpha: float):
        super().__init__(bits, transposed)
        self.alpha = nn.Parameter(torch.tensor(float(alpha)))

    def step(self, w: torch.Tensor) -> torch.Tensor:
        return self.alpha.abs() / P.sym_levels(self.bits)

    def learned(self, latent: torch.Tensor) -> dict[str, float]:
        return {"alpha": float(self.alpha.abs())}

    def grad_path(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        a = self.alpha.abs()
        return torch.where(w >= a, a, torch.where(w <= -a, -a, w))  # clip: d/dα = ±1 on clipped weights only

    def grads(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor, grad: torch.Tensor):
        a = self.alpha.detach().abs()
        gw = grad.masked_fill((w >= a) | (w <= -a), 0)
        ga = ((grad - gw) * w.sign()).sum()  # d clip / dα = sign(w) on the clipped weights (α > 0)
        return gw, ga * P.sym_levels(self.bits)  # the step is α/n
