"""K-means codebooks per tensor, row and group (qbench.quant.kmeans): hand-computed case, per-row equals per-tensor
k-means of each row, Conv1D rows, gradients per centroid, packed state and size."""

from pathlib import Path

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


# --- weighting=fisher: the calibration's squared gradients as the clustering's sample weights ---


def fisher(w: torch.Tensor, g: torch.Tensor, **kw):
    """KMeans(weighting=fisher) parametrization of w with grad_sq g."""
    return KMeans(weighting="fisher", **kw).parametrization(w, False, name="w", stats={"grad_sq": g})


@pytest.mark.parametrize("granularity", ["tensor", "row"])
def test_fisher_weighting_hand_computed(granularity):
    # values 0, 1, 2, 3 with Fisher 1, 1, 1, 100 at 1 bit: Lloyd from the linear init [0, 3] splits at 1.5 and stays
    # there: centroids 0.5 and (2 + 3 * 100) / 101, pulled toward the sensitive weight (unweighted: 2.5)
    w = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    p = fisher(w, torch.tensor([[1.0, 1.0, 1.0, 100.0]]), bits=1, granularity=granularity)
    assert torch.allclose(p.centroids.detach().reshape(-1), torch.tensor([0.5, 302 / 101]))
    plain = KMeans(bits=1, granularity=granularity).parametrization(w, False)
    assert torch.allclose(plain.centroids.detach().reshape(-1), torch.tensor([0.5, 2.5]))


@pytest.mark.parametrize("granularity", ["tensor", "row", "group"])
@pytest.mark.parametrize("bits", [1, 2, 4])
def test_uniform_fisher_equals_plain_kmeans(granularity, bits):
    w = torch.randn(24, 64, generator=torch.Generator().manual_seed(bits))
    kw = {"bits": bits, "granularity": granularity, "group_size": 16}
    got = fisher(w, torch.full_like(w, 0.37), **kw)
    want = KMeans(**kw).parametrization(w, False)
    assert torch.equal(got(w), want(w)) and torch.equal(got.centroids, want.centroids)


def test_fisher_moves_error_to_insensitive_weights():
    # half the weights 100x more sensitive: their weighted share of the error falls below plain k-means'
    w = torch.randn(4096, generator=torch.Generator().manual_seed(0))
    g = torch.where(torch.arange(4096) % 2 == 0, 100.0, 1.0)
    err = lambda p: (g * (p(w) - w) ** 2).sum()  # Fisher-weighted SSE
    assert err(fisher(w, g, bits=2)) < err(KMeans(bits=2).parametrization(w, False))


def test_fisher_asks_for_calibration_and_describes_itself():
    assert KMeans(bits=2).calibration() is None
    c = KMeans(bits=2, weighting="fisher", calib_batches=4).calibration()
    assert c.stats == ("grad_sq",) and c.batches == 4
    d = KMeans(bits=2, weighting="fisher").describe()
    assert d["weighting"] == "fisher" and d["calib_batches"] == 16
    assert "weighting" not in KMeans(bits=2).describe()  # paper A's scheme section as before


@pytest.mark.parametrize(
    "kw", [{"weighting": "hessian"}, {"weighting": "fisher", "backend": "sklearn"}, {"calib_batches": 0}]
)
def test_bad_fisher_options_rejected(kw):
    with pytest.raises(QbenchError):
        KMeans(bits=2, **kw)


@pytest.mark.parametrize("stats", [None, {}, {"grad_sq": -torch.ones(2, 4)}, {"grad_sq": torch.ones(4, 2)}])
def test_fisher_without_valid_statistics_fails_clearly(stats):
    with pytest.raises(QbenchError, match="grad_sq"):
        KMeans(bits=1, weighting="fisher").parametrization(torch.randn(2, 4), False, name="w", stats=stats)


def test_search_global_is_opt_in():
    """scheme.search=global: the near-optimal solver (no worse than paper A's Lloyd on a large tensor); absent from
    describe() at its default, so paper A's records and ids stay as they were; qbench backend only."""
    w = torch.randn(256, 160, generator=torch.Generator().manual_seed(0)) ** 3  # 40,960 weights: the large path
    lloyd, glob = KMeans(bits=2), KMeans(bits=2, search="global")
    err = lambda s: float(((s.parametrization(w, transposed=False)(w) - w) ** 2).sum())  # noqa: E731
    assert err(glob) <= err(lloyd)
    assert "search" not in lloyd.describe() and glob.describe()["search"] == "global"
    for bad in ({"search": "exact"}, {"search": "global", "backend": "sklearn"}):
        with pytest.raises(QbenchError, match="scheme.search"):
            KMeans(bits=2, **bad)


@pytest.mark.parametrize("granularity", ["row", "group"])
@pytest.mark.parametrize("fisher", [False, True])
def test_search_global_per_row_and_group(granularity, fisher):
    """Per row / group, search=global reaches a lower (weighted) error than plain Lloyd from the linear init on
    heavy-tailed rows, and its codebooks are what kmeans_1d_rows(search="global") gives on the grouped rows."""
    from qbench.quant.kmeans1d import kmeans_1d_rows

    g = torch.Generator().manual_seed(1)
    w = torch.randn(8, 64, generator=g) ** 3
    f = torch.rand(8, 64, generator=g) ** 4 if fisher else None
    kw = {"granularity": granularity, "group_size": 32, "weighting": "fisher" if fisher else "none"}
    stats = {"grad_sq": f} if fisher else None
    err = {}
    for search in ("lloyd", "global"):
        q = KMeans(bits=3, search=search, **kw).parametrization(w, False, name="w", stats=stats)(w)
        err[search] = float((((q - w) ** 2) * (1 if f is None else f)).sum())
    assert err["global"] < err["lloyd"]
    rows = w.reshape(-1, 32) if granularity == "group" else w
    ref = kmeans_1d_rows(rows, 8, search="global", weights=None if f is None else f.reshape(rows.shape))
    q = KMeans(bits=3, search="global", **kw).parametrization(w, False, name="w", stats=stats)
    assert torch.equal(q.centroids.detach(), ref.centroids)


def test_row_schemes_default_to_the_global_search():
    """conf/scheme/kmeans_row and kmeans_fisher select search=global (new cell ids; the older per-row cells were
    search=lloyd, which describe() and the cell id leave out)."""
    import qbench.conf
    from omegaconf import OmegaConf

    root = Path(qbench.conf.__file__).parent / "scheme"
    for name in ("kmeans_row", "kmeans_fisher"):
        assert OmegaConf.load(root / f"{name}.yaml").search == "global"
    assert OmegaConf.load(root / "kmeans.yaml").search == "lloyd"
