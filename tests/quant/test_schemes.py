import pytest
import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant.kmeans import Codebook, KMeans
from qbench.quant.kmeans1d import init_centroids
from qbench.quant.linear import Linear
from qbench.quant.packing import side_bits


@pytest.mark.parametrize("bits", [0, 9, 2.5, True])
def test_bits_out_of_range_rejected(bits):
    with pytest.raises(QbenchError, match="bits"):
        KMeans(bits=bits)
    with pytest.raises(QbenchError, match="bits"):
        Linear(bits=bits)


def test_bad_options_rejected():
    with pytest.raises(QbenchError, match="granularity"):
        Linear(bits=2, granularity="channel")
    with pytest.raises(QbenchError, match="init"):
        KMeans(bits=2, init="random")
    with pytest.raises(QbenchError, match="backend"):
        KMeans(bits=2, backend="faiss")


@pytest.mark.parametrize("bits", [1, 2, 3, 4])
def test_kmeans_error_at_most_linear_on_gaussian_weights(bits):
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(bits)) * 0.05
    km = KMeans(bits=bits).parametrization(w, transposed=False)(w)
    lin = Linear(bits=bits, granularity="tensor").parametrization(w, transposed=False)(w)
    assert (km - w).pow(2).sum() <= (lin - w).pow(2).sum()


@pytest.mark.parametrize("init", ["linear", "density", "kmeans++"])
def test_kmeans_never_worse_than_its_linear_init(init):
    w = torch.randn(10_000, generator=torch.Generator().manual_seed(1))
    scheme = KMeans(bits=3, init=init)
    c0 = init_centroids(w.sort().values.double(), 8, init).float()
    init_err = (w - c0[(w[:, None] - c0).abs().argmin(1)]).pow(2).sum()
    c, labels = scheme.cluster(w)
    assert (w - c[labels]).pow(2).sum() <= init_err + 1e-4


def test_kmeans_gradient_is_the_sum_over_members():
    # weights [0.1, 0.2, 5.0, 5.2] -> 2 clusters {0.1, 0.2}, {5.0, 5.2}
    w = torch.tensor([[0.1, 0.2], [5.0, 5.2]])
    p = KMeans(bits=1).parametrization(w, transposed=False)
    assert torch.allclose(p.centroids.detach(), torch.tensor([0.15, 5.1]))
    upstream = torch.tensor([[1.0, 2.0], [3.0, -4.0]])
    (p(w) * upstream).sum().backward()
    assert torch.allclose(p.centroids.grad, torch.tensor([1.0 + 2.0, 3.0 - 4.0]))


def test_codebook_output_uses_only_its_centroids():
    p = Codebook(torch.tensor([-1.0, 2.0]), torch.tensor([[0, 1, 1]]))
    assert torch.equal(p(torch.zeros(1, 3)), torch.tensor([[-1.0, 2.0, 2.0]]))


def test_linear_ste_passes_gradient_to_latent_weight():
    w = nn.Parameter(torch.randn(4, 8))
    p = Linear(bits=2).parametrization(w.detach(), transposed=False)
    out = p(w)
    assert torch.allclose(out, p.quantized(w))
    out.sum().backward()
    assert torch.equal(w.grad, torch.ones_like(w))


def test_linear_rows_are_output_units_for_transposed_weights():
    # a Conv1D-style (in=3, out=2) weight: per-row ranges must follow its columns
    w = torch.tensor([[0.0, 0.0], [1.0, 10.0], [3.0, 30.0]])
    q = Linear(bits=1, granularity="row").parametrization(w, transposed=True)(w)
    assert torch.equal(q, torch.tensor([[0.0, 0.0], [0.0, 0.0], [3.0, 30.0]]))
    row, tensor = Linear(bits=2, granularity="row"), Linear(bits=2)
    assert side_bits(row.parametrization(w, transposed=True).packed_state(w)) == 2 * 2 * 32  # scale + offset per row
    assert side_bits(tensor.parametrization(w, transposed=True).packed_state(w)) == 2 * 32  # paper A: one per tensor
