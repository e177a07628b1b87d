"""Learned-range QAT schemes on real MiniLM tensors: where they start (no worse than min-max, PACT's α learns from
the first step) and how well LAQ's scale fit converges (within 1 % of its objective's grid optimum, 1-8 bits)."""

import math
from pathlib import Path

import pytest
import torch

from qbench.errors import QbenchError
from qbench.quant import primitives as P
from qbench.quant.laq import LAQ, laq_alpha
from qbench.quant.lsq import LSQ
from qbench.quant.mds import MDS
from qbench.quant.pact import PACT

NAMES = {  # MiniLM-L6 tensors: typical (query), heavy-tailed (max|w| = 24σ and 175σ), embeddings
    "q0": "encoder.layer.0.attention.self.query.weight",
    "ao0": "encoder.layer.0.attention.output.dense.weight",
    "out0": "encoder.layer.0.output.dense.weight",
    "pos": "embeddings.position_embeddings.weight",
}


@pytest.fixture(scope="module")
def minilm() -> dict[str, torch.Tensor]:
    from omegaconf import OmegaConf
    from transformers import AutoModel

    from qbench.config import model_schema
    from qbench.models import load_model
    from qbench.overrides import conf_dir

    model = load_model(model_schema(OmegaConf.load(conf_dir() / "model" / "minilm.yaml")), AutoModel, 0)
    params = dict(model.named_parameters())
    return {k: params[v].detach().clone() for k, v in NAMES.items()}


def laq_error(w: torch.Tensor, alpha: float, bits: int, d: torch.Tensor | None) -> float:
    """LAQ's objective Σ d (w - α q(w/α))², written out independently of qbench."""
    n = P.sym_levels(bits)
    wq = torch.where(w >= 0, alpha, -alpha) if bits == 1 else torch.round(torch.clamp(w / alpha * n, -n, n)) * alpha / n
    e = (w - wq) ** 2
    return (e if d is None else e * d).sum().item()


def grid_min(w: torch.Tensor, bits: int, d: torch.Tensor | None, k: int = 40) -> float:
    """Smallest LAQ objective over a geometric grid of k clip values from mean|w|/4 to 1.05·max|w|, then over k
    more between the best one's neighbours (a 0.25 % grid for MiniLM's query weight)."""
    lo, hi = w.abs().mean().item() / 4, 1.05 * w.abs().max().item()
    grid = [lo * (hi / lo) ** (i / (k - 1)) for i in range(k)]
    errs = [laq_error(w, a, bits, d) for a in grid]
    i = min(range(k), key=errs.__getitem__)
    a, b = grid[max(i - 1, 0)], grid[min(i + 1, k - 1)]
    return min(errs[i], *(laq_error(w, a * (b / a) ** (j / (k - 1)), bits, d) for j in range(k)))


@pytest.mark.parametrize("bits", range(1, 9))
def test_laq_alpha_is_within_1pct_of_the_grid_optimum(minilm, bits):
    g = torch.Generator().manual_seed(bits)
    gauss = torch.randn(20_000, generator=g) * 0.05
    curvature = torch.randn(20_000, generator=g).exp()
    for w, d in [(gauss, None), (gauss, curvature), (minilm["q0"], None), (minilm["ao0"], None)]:
        alpha = laq_alpha(w, bits, d).item()
        assert laq_error(w, alpha, bits, d) <= 1.01 * grid_min(w, bits, d)


def test_laq_warm_start_tracks_the_weights_and_is_a_fixed_point(minilm):
    w = minilm["q0"]
    p = LAQ(bits=8).parametrization(w, transposed=False)
    first = p(w)
    assert torch.equal(p(w), first) and torch.equal(p(w), first)  # refit of unchanged weights: same α, bit for bit
    w2 = w * 1.7  # the weights move: the warm-started fit follows
    p(w2)
    alpha = p.packed_state(w2)["step"].item() * P.sym_levels(8)  # the step of the fit for w2 (a fixed point)
    assert laq_error(w2, alpha, 8, None) <= 1.01 * grid_min(w2, 8, None)


@pytest.mark.parametrize("scheme", [PACT, LSQ, MDS, LAQ])
def test_learned_range_inits_are_no_worse_than_min_max(minilm, scheme):
    for name, w in minilm.items():
        for bits in range(2, 9):
            minmax = P.sqnr_db(w, P.linear_fake_quant(w, bits, symmetric=True, granularity="tensor"))
            with torch.no_grad():  # LAQ: its first fit (cold start)
                init = P.sqnr_db(w, scheme(bits=bits).parametrization(w, transposed=False)(w))
            assert init >= minmax - 0.5, (name, bits, init, minmax)


@pytest.mark.parametrize("bits", range(2, 9))
def test_pact_alpha_gets_a_gradient_at_its_initial_value(minilm, bits):
    w = minilm["q0"]
    p = PACT(bits=bits).parametrization(w, transposed=False)
    assert p.alpha.item() <= w.abs().max().item()
    upstream = torch.randn(w.shape, generator=torch.Generator().manual_seed(bits))
    (p(w) * upstream).sum().backward()
    assert p.alpha.grad.item() != 0


def test_published_and_min_max_inits_stay_available():
    w = torch.tensor([0.3, -0.9, 2.5, -5.0])
    mean = w.abs().mean().item()
    assert PACT(bits=4, init="lsq").parametrization(w, False).alpha.item() == pytest.approx(2 * math.sqrt(7) * mean)
    assert MDS(bits=4, init="lsq").parametrization(w, False).gamma.item() == pytest.approx(2 * math.sqrt(7))
    assert LSQ(bits=4, init="lsq").parametrization(w, False).s.item() == pytest.approx(2 * mean / math.sqrt(7))
    assert PACT(bits=4, init="minmax").parametrization(w, False).alpha.item() == pytest.approx(5.0)
    assert LSQ(bits=4, init="minmax").parametrization(w, False).s.item() == pytest.approx(5.0 / 7)
    assert PACT(bits=4, alpha_init=1.5).parametrization(w, False).alpha.item() == pytest.approx(1.5 * mean)
    for scheme in (PACT, LSQ, MDS):
        with pytest.raises(QbenchError, match="scheme.init"):
            scheme(bits=4, init="max")


def test_kmeans_seed_is_the_runs_seed():
    from hydra import compose, initialize_config_dir

    from qbench.cell import build_scheme

    conf = Path(__file__).resolve().parents[2] / "conf"  # this checkout's conf/ (= the package's qbench.conf)
    with initialize_config_dir(str(conf), version_base="1.3"):
        cfg = compose("config", overrides=["scheme=kmeans", "seed=7"])
    assert build_scheme(cfg).seed == 7
