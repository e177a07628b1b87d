"""Uniform ('linear') quantization: symmetric or asymmetric, per tensor / row / group, trained with the STE."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant import primitives as P
from qbench.quant.schemes import Scheme, as_2d, from_2d


@dataclass(frozen=True)
class Linear(Scheme):
    """2^bits evenly spaced levels (asymmetric: min..max of each group; symmetric: see primitives.linear_qparams)."""

    name: ClassVar[str] = "linear"
    symmetric: bool = False
    granularity: str = "tensor"  # paper A: one min-max range per matrix; row: per output unit
    group_size: int = 128

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.granularity not in P.GRANULARITIES:
            raise QbenchError(f"scheme.granularity={self.granularity!r}; valid: {', '.join(P.GRANULARITIES)}")
        if self.granularity == "group" and self.group_size < 2:
            raise QbenchError(f"scheme.group_size must be >= 2, got {self.group_size}")

    def parametrization(self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats=None) -> nn.Module:
        if self.granularity == "group" and as_2d(weight, transposed).shape[1] % self.group_size:
            raise QbenchError(
                f"scheme.group_size={self.group_size} does not divide a row of length "
                f"{as_2d(weight, transposed).shape[1]}; choose a divisor or granularity=row"
            )
        return LinearFakeQuant(self, transposed)


class StraightThrough(torch.autograd.Function):
    """Forward: the quantized tensor q as it is; backward: the gradient goes to the latent w unchanged (STE)."""

    @staticmethod
    def forward(ctx, w: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return q

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


class LinearFakeQuant(nn.Module):
    """w -> dequant(quant(w)) in the forward pass; the gradient passes straight through to the latent w (STE)."""

    def __init__(self, scheme: Linear, transposed: bool):
        super().__init__()
        self.scheme, self.transposed = scheme, transposed

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        s = self.scheme
        w2d = as_2d(w.detach(), self.transposed)
        q2d = P.linear_fake_quant(w2d, s.bits, s.symmetric, s.granularity, s.group_size)
        return from_2d(q2d, tuple(w.shape), self.transposed)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        # value exactly quantized(w) (`w + (q - w).detach()` is off by an ulp for ~1% of weights), gradient 1 to
        # w; so a packed export computes exactly what was trained and evaluated
        return StraightThrough.apply(w, self.quantized(w))

    # export hooks (qbench.quant.packing.Packable): codes in the grouped (groups, elements) order of `quantized`
    @property
    def bits(self) -> int:
        return self.scheme.bits

    def code_layout(self, latent: torch.Tensor) -> tuple[int, int]:
        """(groups, integer levels) of packed_state's codes (qbench.quant.diagnostics): 2^bits levels asymmetric,
        2^bits - 1 symmetric (2 at 1 bit)."""
        s = self.scheme
        levels = 2**s.bits if not s.symmetric or s.bits == 1 else 2**s.bits - 1
        return P.n_groups(tuple(as_2d(latent, self.transposed).shape), s.granularity, s.group_size), levels

    def packed_state(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        s = self.scheme
        g = P.grouped(as_2d(latent.detach(), self.transposed), s.granularity, s.group_size)
        scale, offset = P.linear_qparams(g, s.bits, s.symmetric)
        return {"codes": P.linear_codes(g, scale, offset, s.bits), "scale": scale.float(), "offset": offset.float()}

    @classmethod
    def unpack(cls, state: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
        dtype, shape = getattr(torch, info["dtype"]), info["shape"]
        scale, offset = state["scale"].to(dtype), state["offset"].to(dtype)
        q = (offset + scale * state["codes"].reshape(scale.shape[0], -1)).to(dtype)  # as P.linear_fake_quant
        return from_2d(q, tuple(shape), info["transposed"])
