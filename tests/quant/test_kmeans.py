"""K-means codebooks per tensor, row and group (qbench.quant.kmeans): hand-computed case, per-row equals per-tensor
k-means of each row, Conv1D rows, gradients per centroid, packed state and size."""

import pytest
import torch

from qbench.errors import QbenchError
from qbench.quant.kmeans import GroupedCodebook, KMeans
from qbench.quant.kmeans1d import kmeans_1d
from qbench.quant.packing import side_bits


def test_row_codebooks_hand_computed():
    # row 0: {0, 1} and {10, 11} -> centroids 0.5, 10.5; row 1: {-4} and {2, 4, 3} -> -4, 3
    w = torch.tensor([[0.0, 1.0, 10.0, 11.0], [-4.0, 2.0, 4.0, 3.0]])
    p = KMeans(bits=1, granularity="row").parametrization(w, transposed=False)
    assert torch.equal(p.centroids.detach(), torch.tensor([[0.5, 10.5], [-4.0, 3.0]]))
    assert torch.equal(p(w), torch.tensor([[0.5, 0.5, 10.5, 10.5], [-4.0, 3.0, 3.0, 3.0]]))


def test_group_codebooks_hand_computed():
    w = torch.tensor([[0.0, 2.0, 5.0, 7.0]])  # groups {0, 2} and {5, 7}: each value its own centroid at 1 bit
    p = KMeans(bits=1, granularity="group", group_size=2).parametrization(w, transposed=False)
    assert torch.equal(p.centroids.detach(), torch.tensor([[0.0, 2.0], [5.0, 7.0]]))
    assert torch.equal(p(w), w)


@pytest.mark.parametrize("init", ["linear", "density", "kmeans++"])
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_per_row_equals_per_tensor_kmeans_of_each_row(bits, init):
    g = torch.Generator().manual_seed(bits)
    w = torch.randn(12, 96, generator=g) * 0.05
    w[3, :5] *= 10  # outliers: some linear-init centroids start empty
    w[7] = 0.25  # a constant row
    p = KMeans(bits=bits, init=init, granularity="row").parametrization(w, transposed=False)
    q = p(w)
    for r in range(w.shape[0]):
        # kmeans_1d in plain-Lloyd mode: what the batched row clustering computes (module docstring of kmeans.py)
        ref = kmeans_1d(w[r], 2**bits, init, 100, improve=False, accelerate=False)
        assert torch.equal(p.centroids[r].detach(), ref.centroids), r
        assert torch.equal(q[r], ref.centroids[ref.labels]), r


def test_conv1d_rows_are_output_units():
    w = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))  # Conv1D: (in=8, out=5)
    p = KMeans(bits=2, granularity="row").parametrization(w, transposed=True)
    ref = KMeans(bits=2, granularity="row").parametrization(w.t().contiguous(), transposed=False)
    assert p.centroids.shape == (5, 4)
    assert torch.equal(p(w), ref(w.t()).t())


def test_group_gradient_is_the_sum_over_members():
    w = torch.randn(4, 8, generator=torch.Generator().manual_seed(2))
    p = KMeans(bits=2, granularity="group", group_size=4).parametrization(w, transposed=False)
    up = torch.randn(4, 8, generator=torch.Generator().manual_seed(3))
    (p(w) * up).sum().backward()
    labels = p.packed_state(w)["codes"].reshape(8, 4)
    expected = torch.zeros(8, 4).index_put_((torch.arange(8)[:, None].expand(8, 4), labels), up.reshape(8, 4),
                                            accumulate=True)  # fmt: skip
    assert torch.allclose(p.centroids.grad, expected)


@pytest.mark.parametrize("granularity,groups", [("row", 6), ("group", 12)])
def test_packed_state_and_side_bits(granularity, groups):
    w = torch.randn(6, 16, generator=torch.Generator().manual_seed(4))
    p = KMeans(bits=3, granularity=granularity, group_size=8).parametrization(w, transposed=False)
    assert isinstance(p, GroupedCodebook) and p.bits == 3 and p.code_layout(w) == (groups, 8)
    state = p.packed_state(w)
    assert side_bits(state) == 32 * groups * 8  # the centroid table
    info = {"shape": [6, 16], "dtype": "float32", "bits": 3, "transposed": False}
    assert torch.equal(GroupedCodebook.unpack(state, info), p(w))


def test_describe_keeps_paper_a_scheme_section():
    assert "granularity" not in KMeans(bits=2).describe() and "group_size" not in KMeans(bits=2).describe()
    assert KMeans(bits=2, granularity="row").describe()["granularity"] == "row"
    assert KMeans(bits=2, granularity="group", group_size=32).describe()["group_size"] == 32


def test_bad_granularity_options_rejected():
    with pytest.raises(QbenchError, match="granularity"):
        KMeans(bits=2, granularity="channel")
    with pytest.raises(QbenchError, match="group_size"):
        KMeans(bits=2, granularity="group", group_size=1)
    with pytest.raises(QbenchError, match="backend"):
        KMeans(bits=2, granularity="row", backend="sklearn")
    with pytest.raises(QbenchError, match="divide"):
        KMeans(bits=2, granularity="group", group_size=5).parametrization(torch.randn(2, 8), transposed=False)
