"""Pure tensor math of quantization. No modules, no models: tensors in, tensors out.

Convention: a weight is seen as a 2-D matrix (rows = output units, cols = inputs); per-row statistics are per
output unit. Granularity 'group' splits each row into groups of `group_size` consecutive inputs.
"""

from __future__ import annotations

import math

import torch

GRANULARITIES = ("tensor", "row", "group")


def grouped(w2d: torch.Tensor, granularity: str, group_size: int) -> torch.Tensor:
    """View w2d (rows, cols) as (groups, elements per group) for the given granularity."""
    if granularity == "tensor":
        return w2d.reshape(1, -1)
    if granularity == "row":
        return w2d.reshape(w2d.shape[0], -1)
    if granularity == "group":
        if w2d.shape[1] % group_size:
            raise ValueError(f"group_size={group_size} does not divide the row length {w2d.shape[1]}")
        return w2d.reshape(-1, group_size)
    raise ValueError(f"unknown granularity {granularity!r}; valid: {', '.join(GRANULARITIES)}")


def linear_qparams(g: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and offset (each (groups, 1)) so that w ≈ offset + scale * q with integer codes q in [0, 2^bits).

    asymmetric: 2^bits levels evenly spaced from each group's min to its max (offset = min).
    symmetric, bits >= 2: 2^bits - 1 levels, s * {-(2^(b-1)-1) .. 2^(b-1)-1}, s = max|w| / (2^(b-1)-1); zero exact.
    symmetric, bits == 1: the two levels ±mean|w| (binarization, which minimises the L2 error of sign(w)*s).
    Max-scaled symmetric levels waste range on outliers: per tensor, 2-bit (ternary) can be worse than 1-bit.
    """
    if symmetric and bits == 1:
        s = g.abs().mean(1, keepdim=True)
        return 2 * s, -s  # codes {0, 1} -> {-s, +s}
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        s = g.abs().amax(1, keepdim=True) / qmax
        return s, -qmax * s
    lo, hi = torch.aminmax(g, dim=1, keepdim=True)  # one pass
    return (hi - lo) / (2**bits - 1), lo


def linear_codes(g: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (same shape as g, int64) in [0, 2^bits - 1]; a zero scale (constant group) maps to code 0."""
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    return torch.clamp(torch.round((g - offset) / safe), 0, 2**bits - 1).long()


def linear_fake_quant(
    w2d: torch.Tensor, bits: int, symmetric: bool = False, granularity: str = "row", group_size: int = 128
) -> torch.Tensor:
    """Quantize-dequantize w2d (rows, cols) uniformly; returns a tensor of the same shape and dtype."""
    g = grouped(w2d, granularity, group_size)
    scale, offset = linear_qparams(g, bits, symmetric)
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))
    # = offset + scale * linear_codes(...), bit for bit, in one buffer (this runs on every training step)
    q = (g - offset).div_(safe).round_().clamp_(0, 2**bits - 1)
    return q.mul_(scale).add_(offset).to(w2d.dtype).reshape(w2d.shape)


def n_groups(shape2d: tuple[int, int], granularity: str, group_size: int) -> int:
    """Number of (scale, offset) pairs a linear quantizer stores for a (rows, cols) weight."""
    rows, cols = shape2d
    return {"tensor": 1, "row": rows, "group": rows * cols // max(group_size, 1)}[granularity]


def sqnr_db(w: torch.Tensor, wq: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio 10·log10(|w|² / |w - wq|²) in dB (inf when exact)."""
    noise = (w.double() - wq.double()).pow(2).sum().item()
    signal = w.double().pow(2).sum().item()
    return math.inf if noise == 0 else 10 * math.log10(signal / noise)


# --- symmetric clipped grids of the QAT schemes (PACT, LSQ, LAQ, MDS) and activation fake-quantization ---


def sym_levels(bits: int) -> int:
    """n of the symmetric grid alpha * {-n..n} / n (2^bits - 1 levels, zero exact; 2 bits = ternary); 1 bit is
    binary, {-alpha, +alpha}, returned as n = 1 with the zero level excluded (see sym_round)."""
    return max(1, 2 ** (bits - 1) - 1)


def sym_round(u: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer level k of u = w / step on the symmetric grid: round(clamp(u, -n, n)); 1 bit: sign(u) (0 -> +1)."""
    if bits == 1:
        return torch.where(u >= 0, torch.ones_like(u), -torch.ones_like(u))
    n = sym_levels(bits)
    return torch.round(torch.clamp(u, -n, n))


def sym_codes(k: torch.Tensor, bits: int) -> torch.Tensor:
    """Levels k in [-n, n] (1 bit: ±1) as codes in [0, 2^bits) for packing."""
    return ((k + 1) / 2 if bits == 1 else k + sym_levels(bits)).long()


def sym_uncode(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Inverse of sym_codes."""
    return 2 * codes - 1 if bits == 1 else codes - sym_levels(bits)


def act_fake_quant(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-token symmetric min-max fake-quantization of activations x (..., features): each token (each vector
    along the last dim) gets its own s = max|x| / (2^(bits-1) - 1) (1 bit: s = mean|x|, levels ±s), and
    x -> s * round(x / s) (no clipping: max|x| is a level); a zero token stays zero.

    Per-token dynamic ranges (as torchao's int8 dynamic per-token activation quantization) make a token's value
    depend on that token alone: not on its batch-mates, the batch size or padding, as a per-tensor max would.
    """
    if bits == 1:
        s = x.abs().mean(-1, keepdim=True)  # (..., 1)
        return torch.where(x >= 0, s, -s).to(x.dtype)
    n = 2 ** (bits - 1) - 1
    s = x.abs().amax(-1, keepdim=True) / n  # (..., 1): one scale per token
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return (torch.round(x / safe) * safe).to(x.dtype)
