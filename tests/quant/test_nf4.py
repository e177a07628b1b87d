"""NF4 / normal-quantile codebooks (qbench.quant.nf4): the codebook is bitsandbytes' NF4 at 4 bits and the same
normal-quantile construction at 2..8 bits; hand-computed blockwise quantization; STE; packed state."""

import pytest
import torch

from qbench.errors import QbenchError
from qbench.quant.nf4 import NF4, NormalFloatQuant, normal_codebook, normal_offset
from qbench.quant.packing import side_bits

# bitsandbytes' NF4 table as its kernels hard-code it (dDequantizeNF4; QLoRA, Dettmers et al. 2023, appendix E)
BNB_NF4 = [-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
           -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
           0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023,
           1.0]  # fmt: skip


def test_nf4_codebook_is_bitsandbytes_table():
    assert torch.equal(normal_codebook(4), torch.tensor(BNB_NF4, dtype=torch.float32))


@pytest.mark.parametrize("bits", range(2, 9))
def test_codebook_values_are_normal_quantiles(bits):
    """Entries are Φ⁻¹ of evenly spaced probabilities (2^(b-1) above 1/2, 2^(b-1) - 1 below, and 0), over the
    largest: checked against scipy.stats.norm.ppf, as bitsandbytes' create_normal_map computes them."""
    norm = pytest.importorskip("scipy.stats").norm
    half, off = 2 ** (bits - 1), normal_offset(bits)
    pos = norm.ppf(torch.linspace(off, 0.5, half + 1)[:-1].double().numpy())
    neg = -norm.ppf(torch.linspace(off, 0.5, half)[:-1].double().numpy())
    expected = torch.tensor(sorted([*pos, 0.0, *neg]), dtype=torch.float64)
    expected /= expected.max()
    got = normal_codebook(bits)
    assert got.numel() == 2**bits and got[0] == -1 and got[-1] == 1 and (got == 0).sum() == 1
    assert torch.all(got[1:] > got[:-1])
    assert torch.allclose(got.double(), expected, rtol=0, atol=1e-7)


def test_hand_computed_blocks():
    # 2 bits: codebook {-1, 0, c, 1}, c = Φ⁻¹(p2) / Φ⁻¹(p1) (p = linspace(offset, 0.5, 3)); blocks of 2 values
    c = normal_codebook(2)
    w = torch.tensor([[2.0, -1.0, 0.0, 0.0, 0.1, -0.4]])
    q = NF4(bits=2, block_size=2).parametrization(w, transposed=False)(w)
    # block 1: absmax 2 -> 1 and -0.5 -> nearest 0 (-0.5 is the midpoint of -1 and 0: ties go up);
    # block 2: all zero -> 0; block 3: absmax 0.4 -> 0.25 is nearest c (0.436) over 0, -1 -> -1
    expected = torch.tensor([[2.0, 0.0, 0.0, 0.0, 0.0, -0.4]])
    expected[0, 4] = c[2] * torch.tensor(0.4)  # in float32, as the scheme computes it
    assert torch.equal(q, expected)


def test_short_last_block_and_transposed_rows():
    w = torch.randn(10, 7, generator=torch.Generator().manual_seed(0))  # Conv1D (in=10, out=7): rows are columns
    p = NF4(bits=4, block_size=16).parametrization(w, transposed=True)
    ref = NF4(bits=4, block_size=16).parametrization(w.t().contiguous(), transposed=False)
    assert torch.equal(p(w), ref(w.t()).t())
    state = p.packed_state(w)
    assert state["absmax"].numel() == 5  # ceil(70 / 16)
    assert side_bits(state) == 32 * (5 + 16)  # block scales and the codebook
    info = {"shape": [10, 7], "dtype": "float32", "bits": 4, "transposed": True, "scheme": p.scheme.describe()}
    assert torch.equal(NormalFloatQuant.unpack(state, info), p(w))


def test_values_are_codebook_times_block_absmax_and_gradient_is_straight_through():
    w = torch.randn(4, 64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    q = NF4(bits=4, block_size=64).parametrization(w.detach(), transposed=False)(w)
    code = normal_codebook(4)
    for r in range(4):
        levels = code * w[r].detach().abs().max()
        assert torch.isin(q[r].detach(), levels).all()
        assert (q[r].detach() - w[r].detach()).abs().max() <= (levels[1:] - levels[:-1]).max() / 2 + 1e-7
    q.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_bad_options_rejected():
    with pytest.raises(QbenchError, match="bits >= 2"):
        NF4(bits=1)
    with pytest.raises(QbenchError, match="block_size"):
        NF4(bits=4, block_size=0)
