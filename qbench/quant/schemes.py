"""Scheme base class: a small validated dataclass that turns one weight into a quantizing parametrization.

A concrete scheme (one file each: `linear.py`, `kmeans.py`, ...) implements `parametrization` and
`overhead_bits`; `qbench.quant.wiring.quantize_model` attaches the parametrizations to a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError


@dataclass(frozen=True)
class Scheme:
    """Base: `bits` per weight, 1–8."""

    name: ClassVar[str] = "base"
    bits: int

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or not 1 <= self.bits <= 8:
            raise QbenchError(f"scheme={self.name}: bits must be an integer in 1..8, got {self.bits!r}")

    def parametrization(self, weight: torch.Tensor, transposed: bool) -> nn.Module:
        """Module mapping the latent weight to its quantized value (same shape). `transposed`: the weight is
        stored (in, out) as in GPT-2's Conv1D, so output units are its columns."""
        raise NotImplementedError

    def overhead_bits(self, shape2d: tuple[int, int]) -> int:
        """Bits of side information (codebook, scales, offsets) stored besides the b-bit codes."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self)}


@dataclass(frozen=True)
class NoQuant:
    """The full-precision baseline: nothing is quantized."""

    name: ClassVar[str] = "none"
    bits: None = None

    def describe(self) -> dict:
        return {"name": self.name, "bits": None}


def as_2d(w: torch.Tensor, transposed: bool) -> torch.Tensor:
    """(rows = output units, cols) view of a weight: Linear (out, in) as is, Conv1D (in, out) transposed,
    Embedding (vocab, dim) as is."""
    w2d = w.reshape(w.shape[0], -1)
    return w2d.t() if transposed else w2d
