"""NF4 / normal-quantile codebooks (bitsandbytes, Dettmers et al. 2023): a fixed codebook of standard normal
quantiles normalised to [-1, 1], scaled per block of `block_size` weights by the block's absmax.

The codebook is bitsandbytes' `create_normal_map(offset=0.9677083, use_extra_value=True)` generalised to b bits:
2^(b-1) positive quantiles Φ⁻¹(linspace(offset, 0.5, 2^(b-1) + 1)[:-1]), 2^(b-1) - 1 negative ones
-Φ⁻¹(linspace(offset, 0.5, 2^(b-1))[:-1]) and an exact zero (asymmetric: one more positive value), sorted and divided
by the largest. At 4 bits this is bitsandbytes' NF4 table. bitsandbytes takes Φ⁻¹ from scipy.stats.norm.ppf; here it
is torch.special.ndtri (the same function in float64; the 16 NF4 values agree with the published table to float32
rounding, tests/quant/test_nf4.py). The offset (the outermost quantile) is bitsandbytes' constant at 4 bits and the
same rule, the mean of 1 - 1/(2(2^b - 1)) and 1 - 1/(2·2^b), at other bits.

Blocks are consecutive weights of the (rows = output units, cols) view (Conv1D transposed, as everywhere); the last
block may be shorter. Packed: codes (indices into the codebook), the codebook and the fp32 absmax of each block (side
bits). QAT: straight-through estimator over the latent weight, as linear quantization.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant.linear import StraightThrough
from qbench.quant.schemes import Scheme, as_2d, from_2d

NF4_OFFSET = 0.9677083  # bitsandbytes' create_normal_map default: (1 - 1/30 + 1 - 1/32) / 2, rounded


def normal_offset(bits: int) -> float:
    """The outermost quantile's probability: bitsandbytes' constant at 4 bits, its rule at other bits."""
    if bits == 4:
        return NF4_OFFSET
    n = 2**bits
    return ((1 - 1 / (2 * (n - 1))) + (1 - 1 / (2 * n))) / 2


def normal_codebook(bits: int) -> torch.Tensor:
    """(2^bits,) float32 ascending codebook in [-1, 1] with an exact zero, built as bitsandbytes builds NF4:
    probabilities from a float32 linspace, quantiles in float64, then float32, sorted and divided by the max."""
    if not 2 <= bits <= 8:
        raise ValueError(f"normal_codebook: bits must be in 2..8, got {bits}")
    half, off = 2 ** (bits - 1), normal_offset(bits)
    pos = torch.special.ndtri(torch.linspace(off, 0.5, half + 1)[:-1].double())  # (half,)
    neg = -torch.special.ndtri(torch.linspace(off, 0.5, half)[:-1].double())  # (half - 1,)
    v = torch.cat([pos, torch.zeros(1, dtype=torch.float64), neg]).float().sort().values
    return v / v.max()


def block_absmax(flat: torch.Tensor, block_size: int) -> torch.Tensor:
    """(blocks,) absmax of each block of block_size consecutive values of flat (n,); the last block may be short."""
    n = flat.numel()
    pad = -n % block_size
    a = flat.abs()
    if pad:
        a = torch.cat([a, a.new_zeros(pad)])
    return a.reshape(-1, block_size).amax(1)


def nf_codes(flat: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, block_size: int) -> torch.Tensor:
    """(n,) int64 index of the nearest codebook entry to each value / its block's absmax (ties to the upper
    entry; an all-zero block maps to the zero entry)."""
    scale = torch.where(absmax > 0, absmax, torch.ones_like(absmax)).repeat_interleave(block_size)[: flat.numel()]
    mids = (code[1:] + code[:-1]) / 2
    return torch.bucketize((flat / scale).to(code.dtype), mids, right=True)


def nf_dequant(codes: torch.Tensor, absmax: torch.Tensor, code: torch.Tensor, block_size: int) -> torch.Tensor:
    """(n,) float32 code[codes] * absmax of the block: the quantized values (forward and unpack compute this)."""
    return code[codes] * absmax.repeat_interleave(block_size)[: codes.numel()]


@dataclass(frozen=True)
class NF4(Scheme):
    """bitsandbytes' NF4 at 4 bits; the normal-quantile codebook of 2^bits entries at 2..8 bits."""

    name: ClassVar[str] = "nf4"
    block_size: int = 64

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.bits < 2 or (self.embed_bits or 2) < 2:
            raise QbenchError("scheme=nf4 needs bits >= 2 (and embed_bits >= 2): its 1-bit codebook is {0, 1}")
        if not isinstance(self.block_size, int) or self.block_size < 1:
            raise QbenchError(f"scheme.block_size must be an integer >= 1, got {self.block_size!r}")

    def parametrization(self, weight: torch.Tensor, transposed: bool, *, name: str = "", stats=None) -> nn.Module:
        return NormalFloatQuant(self, transposed)


class NormalFloatQuant(nn.Module):
    """w -> code[nearest] * block absmax in the forward pass; gradient straight through to the latent w (STE)."""

    def __init__(self, scheme: NF4, transposed: bool):
        super().__init__()
        self.scheme, self.transposed = scheme, transposed  # the packed file's info["scheme"] is scheme.describe()
        self._bits, self.block_size = scheme.bits, scheme.block_size
        self.register_buffer("code", normal_codebook(scheme.bits), persistent=False)  # (2^bits,)

    def _codes(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(codes (n,), absmax (blocks,)) of the latent w, in the (rows, cols) view's row-major order."""
        flat = as_2d(w.detach(), self.transposed).reshape(-1).float()
        absmax = block_absmax(flat, self.block_size)
        return nf_codes(flat, absmax, self.code, self.block_size), absmax

    def quantized(self, w: torch.Tensor) -> torch.Tensor:
        codes, absmax = self._codes(w)
        q = nf_dequant(codes, absmax, self.code, self.block_size).to(w.dtype)
        return from_2d(q, tuple(w.shape), self.transposed)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return StraightThrough.apply(w, self.quantized(w))

    # export hooks (qbench.quant.packing.Packable)
    @property
    def bits(self) -> int:
        return self._bits

    def code_layout(self, latent: torch.Tensor) -> tuple[int, int]:
        """(codebooks, entries): one shared codebook (scaled per block)."""
        return 1, self.code.numel()

    def packed_state(self, latent: torch.Tensor) -> dict[str, torch.Tensor]:
        codes, absmax = self._codes(latent)
        return {"codes": codes, "code": self.code.clone(), "absmax": absmax.float()}

    @classmethod
    def unpack(cls, state: dict[str, torch.Tensor], info: dict) -> torch.Tensor:
        code, absmax = state["code"].float(), state["absmax"].float()
        q = nf_dequant(state["codes"], absmax, code, info["scheme"]["block_size"]).to(getattr(torch, info["dtype"]))
        return from_2d(q, tuple(info["shape"]), info["transposed"])
