import math

import pytest
import torch

from qbench.quant import primitives as P


def test_asymmetric_is_exact_on_its_own_grid():
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    assert torch.equal(P.linear_fake_quant(w, bits=2, granularity="row"), w)


def test_asymmetric_rounds_to_nearest_level():
    w = torch.tensor([[0.0, 0.4, 0.6, 3.0]])  # levels 0, 1, 2, 3
    assert torch.equal(P.linear_fake_quant(w, bits=2), torch.tensor([[0.0, 0.0, 1.0, 3.0]]))


def test_symmetric_narrow_range_keeps_zero_exact():
    w = torch.tensor([[-3.0, -1.4, 0.0, 0.2, 3.0]])  # 3 bits: s = 3/3 = 1, levels -3..3
    assert torch.equal(P.linear_fake_quant(w, bits=3, symmetric=True), torch.tensor([[-3.0, -1.0, 0.0, 0.0, 3.0]]))


def test_symmetric_one_bit_is_sign_times_mean_abs():
    w = torch.tensor([[-2.0, 1.0, 3.0, -1.0]])  # mean |w| = 1.75
    assert torch.allclose(P.linear_fake_quant(w, bits=1, symmetric=True), torch.tensor([[-1.75, 1.75, 1.75, -1.75]]))


def test_granularities_use_their_own_ranges():
    w = torch.tensor([[0.0, 1.0, 100.0, 101.0], [0.0, 2.0, 4.0, 6.0]])
    row = P.linear_fake_quant(w, bits=1, granularity="row")
    assert torch.equal(row[1], torch.tensor([0.0, 0.0, 6.0, 6.0]))
    group = P.linear_fake_quant(w, bits=1, granularity="group", group_size=2)
    assert torch.equal(group, w)  # each pair is its own min..max
    tensor = P.linear_fake_quant(w, bits=1, granularity="tensor")
    assert set(tensor.flatten().tolist()) <= {0.0, 101.0}


def test_constant_group_is_exact():
    w = torch.full((2, 4), 0.5)
    assert torch.equal(P.linear_fake_quant(w, bits=2), w)


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("granularity", ["tensor", "row", "group"])
def test_error_falls_as_bits_rise(symmetric, granularity):
    # symmetric 1-bit is a different quantizer (sign · mean|w|): with outliers it can beat max-scaled ternary
    # (2 bits), so the symmetric ladder starts at 2 bits
    w = torch.randn(64, 256, generator=torch.Generator().manual_seed(0))
    bits = range(2 if symmetric else 1, 9)
    errs = [(P.linear_fake_quant(w, b, symmetric, granularity, 64) - w).pow(2).sum().item() for b in bits]
    assert all(a > b for a, b in zip(errs, errs[1:], strict=False)), errs


def test_codes_fit_in_bits():
    w = torch.randn(8, 32)
    for bits in range(1, 9):
        for sym in (False, True):
            g = P.grouped(w, "row", 0)
            s, o = P.linear_qparams(g, bits, sym)
            q = P.linear_codes(g, s, o, bits)
            assert q.min() >= 0 and q.max() < 2**bits


def test_group_size_must_divide_rows():
    with pytest.raises(ValueError, match="does not divide"):
        P.linear_fake_quant(torch.randn(2, 10), 2, granularity="group", group_size=4)


def test_sqnr():
    w = torch.tensor([3.0, 4.0])
    assert P.sqnr_db(w, w) == math.inf
    assert P.sqnr_db(w, torch.tensor([3.0, 3.0])) == pytest.approx(10 * math.log10(25.0))
