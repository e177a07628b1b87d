"""Scheme base class: a small validated dataclass that turns one weight into a quantizing parametrization.

A concrete scheme (one file each: `linear.py`, `kmeans.py`, ...) implements `parametrization`, whose module also
implements the packing protocol (qbench.quant.packing.Packable): what it packs is also what its size is (side
tensors = overhead bits). `qbench.quant.wiring.quantize_model` attaches the parametrizations to a model.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError


@dataclass(frozen=True)
class Scheme:
    """Base: `bits` per weight, 1–8; `embed_bits` for nn.Embedding weights (None = bits); `act_bits` for the
    inputs of the quantized Linear/Conv1D layers (None = full precision; see qbench.quant.wiring)."""

    name: ClassVar[str] = "base"
    bits: int
    embed_bits: int | None = None
    act_bits: int | None = None

    def __post_init__(self) -> None:
        for key in ("bits", "embed_bits", "act_bits"):
            v = getattr(self, key)
            if key != "bits" and v is None:
                continue
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 8:
                raise QbenchError(f"scheme={self.name}: {key} must be an integer in 1..8, got {v!r}")

    def for_embedding(self) -> Scheme:
        """The scheme applied to nn.Embedding weights: this one with bits = embed_bits."""
        return self if self.embed_bits in (None, self.bits) else replace(self, bits=self.embed_bits)

    @property
    def wea(self) -> str:
        """Weight-embedding-activation bits as paper B writes them, e.g. '2-2-8' (32 = full precision)."""
        return f"{self.bits}-{self.embed_bits or self.bits}-{self.act_bits or 32}"

    def train_callbacks(self) -> list:
        """transformers.TrainerCallback instances the scheme needs during fine-tuning (LAQ: optimizer state)."""
        return []

    def parametrization(self, weight: torch.Tensor, transposed: bool) -> nn.Module:
        """Module mapping the latent weight to its quantized value (same shape). `transposed`: the weight is
        stored (in, out) as in GPT-2's Conv1D, so output units are its columns."""
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self), "wea": self.wea}


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
