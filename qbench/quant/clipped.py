"""Shared base of the per-module scaled QAT quantizers (PACT, LSQ, LAQ, MDS: paper B, Tao et al. 2022).

A weight is quantized per tensor ("per module") to integer levels k in [-qn, qp] times one step:
    value = k * step,   k = round(clamp(w / step, -qn, qp))   (1 bit: k = sign(w), levels ±step)
Each scheme defines how `step` is obtained (a learned clip, a learned step, a curvature-weighted fit, a learned
multiple of mean|w|) and, through `grad_path`, which gradient reaches the latent weight and the learned scale.
The forward value is exactly `k * step` (computed from detached tensors) plus `g - g.detach()` (zero) for the
gradient, so a packed export (`packed_state`/`unpack`) reproduces it bit for bit.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from qbench.quant import primitives as P


def round_ste(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Value k (the rounded level), gradient 1 to u (straight-through estimator)."""
    return u + (k - u).detach()


def lsq_init_clip(w: torch.Tensor, bits: int) -> float:
    """LSQ's initial step 2·mean|w|/sqrt(Qp) expressed as a clip value n·step = 2·sqrt(n)·mean|w| (n = levels on
    one side): 1.6σ at 2 bits (ternary), 4.2σ at 4 bits, 18σ at 8 bits for Gaussian weights; 1 bit: mean|w|."""
    mult = 1.0 if bits == 1 else 2.0 * math.sqrt(P.sym_levels(bits))  # 1 bit: ±mean|w|, the L2-optimal binary scale
    return mult * w.detach().abs().mean().item()


class ScaledFakeQuant(nn.Module):
    """w -> k * step per tensor, with a scheme-specific gradient; implements the export protocol
    (qbench.quant.packing.Packable): codes = k + qn (1 bit: (k + 1) / 2), side tensors `step` and `levels`."""

    def __init__(self, bits: int, transposed: bool, qn: int | None = None, qp: int | None = None):
        super().__init__()
        self._bits, self.transposed = bits, transposed
        n = P.sym_levels(bits)
        self.qn, self.qp = (n if qn is None else qn), (n if qp is None else qp)
        self.binary = bits == 1 and self.qn == self.qp == 1

    # --- what a scheme defines ---
    def step(self, w: torch.Tensor) -> torch.Tensor:
        """The quantization step (0-d tensor), possibly with a gradient to a learned parameter."""
        raise NotImplementedError

    def grad_path(self, w: torch.Tensor, step: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """An expression whose gradient (w.r.t. w and the learned parameters) is the scheme's; its value is unused."""
        raise NotImplementedError

    # --- shared ---
    def levels(self, w: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        u = w.detach() / step.detach()
        if self.binary:
            return P.sym_round(u, 1)
        return torch.round(torch.clamp(u, -self.qn, self.qp))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        step = self.step(w)
        k = self.levels(w, step)
        g = self.grad_path(w, step, k)
        return (k * step.detach()).to(w.dtype) + (g - g.detach())

    @property
    def bits(self) -> int:
        return self._bits

    def packed_state(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            step = self.step(latent.detach()).detach()
            k = self.levels(latent, step)
        mult, zero = (2, 1) if self.binary else (1, self.qn)
        codes = ((k + zero) / mult).round().long().reshape(-1)
        levels = torch.tensor([mult, zero], dtype=torch.float32)
        return {"codes": codes, "step": step.float().reshape(1), "levels": levels}

    @classmethod
    def unpack(cls, state: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
        dtype = getattr(torch, info["dtype"])
        mult, zero = state["levels"].to(dtype)
        k = state["codes"].to(dtype) * mult - zero
        return (k * state["step"].to(dtype)[0]).to(dtype).reshape(info["shape"])
