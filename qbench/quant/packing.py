"""Dense bit-packing of b-bit integer codes (pure tensor math), and the protocol a quantizer implements to be packed.

Layout: the codes form one little-endian bit stream. Code i occupies bits [i*b, (i+1)*b) of the stream, least
significant bit first; byte j holds stream bits [8j, 8j+8). Any b in 1..8 works (3, 5, 6, 7 codes straddle bytes);
n codes take exactly ceil(n*b/8) bytes and the unused high bits of the last byte are zero.

Vectorised by blocks of 8 codes: 8 codes of b bits are exactly b bytes, so each block is one (8b)-bit integer
(at most 56 bits for b < 8; b = 8 is a plain copy), computed from the 8 codes read as one 64-bit word.
"""

from __future__ import annotations

import sys
from typing import Protocol, runtime_checkable

import torch

_BIG_ENDIAN = sys.byteorder == "big"


def packed_nbytes(n: int, bits: int) -> int:
    """Bytes that n codes of `bits` bits take when packed: ceil(n * bits / 8)."""
    return (n * bits + 7) // 8


def side_bits(state: dict[str, torch.Tensor]) -> int:
    """Bits of a packed state's side tensors (all but "codes": codebook, scales, offsets...), stored as fp32: the
    scheme's overhead besides its b-bit codes. The record's per-tensor overhead and the packed file both use it."""
    return sum(32 * v.numel() for k, v in state.items() if k != "codes")


def _check_bits(bits: int) -> None:
    if not isinstance(bits, int) or isinstance(bits, bool) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an integer in 1..8, got {bits!r}")


def _padded_bytes(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """x (1-D uint8) zero-padded to a multiple of `multiple` elements (contiguous)."""
    rem = x.numel() % multiple
    return torch.cat([x, x.new_zeros(multiple - rem)]) if rem else x.contiguous()


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack integer codes (any shape, flattened in row-major order, values in [0, 2**bits)) into a 1-D uint8
    tensor of ceil(numel * bits / 8) bytes."""
    _check_bits(bits)
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        raise TypeError(f"pack_bits: codes must be an integer tensor, got {codes.dtype}")
    flat = codes.detach().reshape(-1).cpu()
    n = flat.numel()
    lo, hi = (int(v) for v in torch.aminmax(flat)) if n else (0, 0)
    if lo < 0 or hi >= 2**bits:
        raise ValueError(f"pack_bits: codes must lie in [0, {2**bits}) for bits={bits}, got [{lo}, {hi}]")
    if bits == 8:
        return flat.to(torch.uint8, copy=True)
    # 8 codes, one per byte, read as one little-endian 64-bit word W (code j in bits 8j..8j+7); the packed word
    # puts code j at bits bits*j..: sum_j (W & mask << 8j) >> (8 - bits) j. Contiguous int64 ops only.
    words = _padded_bytes(flat.to(torch.uint8), 8).view(torch.int64)
    if _BIG_ENDIAN:
        words = words.view(torch.uint8).view(-1, 8).flip(1).contiguous().view(torch.int64)
    mask = 2**bits - 1
    out, tmp = words & mask, torch.empty_like(words)
    for j in range(1, 8):  # in place: no temporaries of the whole tensor
        torch.bitwise_and(words, mask << (8 * j), out=tmp)
        tmp >>= (8 - bits) * j
        out |= tmp
    out_bytes = out.view(torch.uint8).view(-1, 8)
    if _BIG_ENDIAN:
        out_bytes = out_bytes.flip(1)
    return out_bytes[:, :bits].reshape(-1)[: packed_nbytes(n, bits)].clone()  # own, contiguous storage


def unpack_bits(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Inverse of pack_bits: the first n codes (1-D, uint8) of a packed byte stream."""
    _check_bits(bits)
    if packed.dtype != torch.uint8:
        raise TypeError(f"unpack_bits: packed must be uint8, got {packed.dtype}")
    flat = packed.detach().reshape(-1).cpu()
    if flat.numel() < packed_nbytes(n, bits):
        raise ValueError(f"unpack_bits: {flat.numel()} bytes hold fewer than n={n} codes of {bits} bits")
    if bits == 8:
        return flat[:n].clone()
    blocks = -(-n // 8)
    buf = torch.zeros(blocks, 8, dtype=torch.uint8)
    buf[:, :bits] = _padded_bytes(flat[: blocks * bits], bits)[: blocks * bits].view(blocks, bits)
    if _BIG_ENDIAN:
        buf = buf.flip(1).contiguous()
    words = buf.view(torch.int64).reshape(-1)
    mask = 2**bits - 1
    out, tmp = words & mask, torch.empty_like(words)
    for j in range(1, 8):
        torch.bitwise_and(words, mask << (bits * j), out=tmp)
        tmp <<= (8 - bits) * j
        out |= tmp
    out_bytes = out.view(torch.uint8)
    if _BIG_ENDIAN:
        out_bytes = out_bytes.view(-1, 8).flip(1).reshape(-1)
    return out_bytes[:n]


@runtime_checkable
class Packable(Protocol):
    """What a quantizing parametrization implements so `qbench.quant.checkpoint` can store it as packed codes.

    - `bits`: width of one code (1..8).
    - `packed_state(latent)`: {"codes": integer tensor with latent.numel() values in [0, 2**bits), in an order of
      the scheme's choosing} plus side tensors (codebook, scales, offsets...; stored as fp32).
    - `unpack(state, info)` (a classmethod: the loader has no instance): the quantized weight from those tensors,
      with `state["codes"]` an int64 1-D tensor in packed_state's order and side tensors fp32. `info` holds
      "shape", "dtype" (torch dtype name, e.g. "float32"), "bits" and "transposed" (GPT-2's Conv1D (in, out)).
      It must equal what the parametrization computes from `latent` in the forward pass, bit for bit.

    A new scheme whose module reuses LinearFakeQuant (or subclasses it) inherits the hooks.
    """

    bits: int

    def packed_state(self, latent: torch.Tensor) -> dict[str, torch.Tensor]: ...

    @classmethod
    def unpack(cls, state: dict[str, torch.Tensor], info: dict) -> torch.Tensor: ...
