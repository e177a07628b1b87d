"""Paper B's QAT schemes (PACT, LSQ, LAQ, MDS), W-E-A bits and activation fake-quantization, by hand computation."""

import math

import pytest
import torch
from torch import nn

from qbench.errors import QbenchError
from qbench.quant.laq import LAQ, LAQCallback, laq_alpha
from qbench.quant.lsq import LSQ
from qbench.quant.mds import MDS
from qbench.quant.pact import PACT
from qbench.quant.primitives import act_fake_quant
from qbench.quant.wiring import ActFakeQuant, quantize_model

# mean|w| = 1; with α = 1 and 2 bits (ternary, n = 1): 0.1 -> 0, 0.6 -> 1 inside; -2.0 and 1.3 clipped
W = torch.tensor([[0.1, 0.6, -2.0, 1.3]])
UP = torch.tensor([[1.0, 2.0, 3.0, 4.0]])  # upstream gradient


def grads(p, w):
    w = w.clone().requires_grad_(True)
    (p(w) * UP).sum().backward()
    return p(w).detach(), w.grad


def test_mds_gamma_learns_from_clipped_and_unclipped_weights():
    p = MDS(bits=2, gamma_init=1.0).parametrization(W, transposed=False)
    q, gw = grads(p, W)
    assert torch.equal(q, torch.tensor([[0.0, 1.0, -1.0, 1.0]]))
    # dq/dα: unclipped (q - w)/α = -0.1, 0.4; clipped sign(w) = -1, 1; dα/dγ = mean|w| = 1
    inside, clipped = 1 * -0.1 + 2 * 0.4, 3 * -1.0 + 4 * 1.0
    assert p.gamma.grad.item() == pytest.approx(inside + clipped)
    assert torch.equal(gw, torch.tensor([[1.0, 2.0, 0.0, 0.0]]))  # STE inside, 0 where clipped
    p.gamma.grad = None  # only unclipped weights upstream: γ still learns
    (p(W) * torch.tensor([[1.0, 2.0, 0.0, 0.0]])).sum().backward()
    assert p.gamma.grad.item() == pytest.approx(inside) and inside != 0


def test_pact_alpha_learns_only_from_clipped_weights():
    p = PACT(bits=2, alpha_init=1.0).parametrization(W, transposed=False)
    q, gw = grads(p, W)
    assert torch.equal(q, torch.tensor([[0.0, 1.0, -1.0, 1.0]]))
    assert p.alpha.grad.item() == pytest.approx(3 * -1.0 + 4 * 1.0)
    assert torch.equal(gw, torch.tensor([[1.0, 2.0, 0.0, 0.0]]))
    p.alpha.grad = None
    (p(W) * torch.tensor([[1.0, 2.0, 0.0, 0.0]])).sum().backward()
    assert p.alpha.grad.item() == 0.0


def test_lsq_step_gets_its_scaled_gradient():
    w = torch.tensor([0.3, -0.9, 2.5, -5.0])
    p = LSQ(bits=2, init="lsq").parametrization(w, transposed=False)  # Qn = 2, Qp = 1
    assert p.s.item() == pytest.approx(2 * w.abs().mean().item() / math.sqrt(1))  # LSQ's published init
    p.s.data.fill_(1.0)
    w_ = w.clone().requires_grad_(True)
    q = p(w_)
    assert torch.equal(q.detach(), torch.tensor([0.0, -1.0, 1.0, -2.0]))
    (q * UP[0]).sum().backward()
    # inside: round(w/s) - w/s = -0.3, -0.1; above Qp: +1; below -Qn: -2; g = 1/sqrt(numel * Qp) = 1/2
    assert p.s.grad.item() == pytest.approx((1 * -0.3 + 2 * -0.1 + 3 * 1 + 4 * -2) / math.sqrt(4 * 1))
    assert torch.equal(w_.grad, torch.tensor([1.0, 2.0, 0.0, 0.0]))
    with pytest.raises(QbenchError, match="bits >= 2"):
        LSQ(bits=1)


def sse(w, alpha, d=None):
    """Σ d (w - q_α(w))² for ternary q, for a scalar α or a (k,) grid of them."""
    alpha = torch.as_tensor(alpha, dtype=torch.float32).reshape(-1, 1)
    q = torch.round(torch.clamp(w / alpha, -1, 1)) * alpha
    out = ((1 if d is None else d) * (w - q) ** 2).sum(-1)
    return out if len(out) > 1 else out.item()


def test_laq_unweighted_is_the_least_squares_optimum_and_curvature_moves_it():
    w = torch.tensor([0.05, -0.2, 0.5, 0.7, -0.9, 1.1, 2.0, -0.4])
    grid = torch.linspace(0.05, 4, 40_000)
    errs = sse(w, grid)
    a1 = laq_alpha(w, 2, None).item()  # searched to a relative resolution of 0.4 %
    assert a1 == pytest.approx(grid[errs.argmin()].item(), rel=5e-3) and sse(w, a1) <= errs.min() * (1 + 1e-4)
    assert laq_alpha(w, 2, torch.ones_like(w)).item() == a1
    # large curvature on the big weights: α moves towards them and is optimal for the weighted error
    d = torch.tensor([1.0, 1, 1, 1, 1, 1, 100, 1])
    a2 = laq_alpha(w, 2, d).item()
    errs_d = sse(w, grid, d)
    assert a2 > a1 and a2 == pytest.approx(grid[errs_d.argmin()].item(), rel=5e-3)
    assert sse(w, a2, d) <= errs_d.min() * (1 + 1e-4) and sse(w, a2, d) < sse(w, a1, d)


def test_laq_callback_feeds_adams_second_moments():
    lin = nn.Linear(4, 3)
    quantize_model(lin, LAQ(bits=2), ["*"], [])
    opt = torch.optim.Adam(lin.parameters(), betas=(0.9, 0.99), eps=1e-8)
    lin(torch.randn(5, 4)).pow(2).sum().backward()
    opt.step()
    quant, latent = lin.parametrizations.weight[0], lin.parametrizations.weight.original
    assert quant.curvature is None
    LAQCallback().on_step_end(None, None, None, model=lin, optimizer=opt)
    v = opt.state[latent]["exp_avg_sq"]
    assert torch.allclose(quant.curvature, (v / (1 - 0.99)).sqrt() + 1e-8)
    assert torch.equal(lin.weight, quant(latent))


def test_activation_fake_quant_is_exact():
    assert torch.equal(act_fake_quant(torch.tensor([-2.0, 0.9, 1.1, 2.0]), 2), torch.tensor([-2.0, 0.0, 2.0, 2.0]))
    assert torch.equal(act_fake_quant(torch.tensor([-3.0, 1.4, 1.6, 3.0]), 3), torch.tensor([-3.0, 1.0, 2.0, 3.0]))
    x = torch.tensor([[-1.0, 0.25, 0.5, 127.0]])  # 8 bits: step 1
    assert torch.equal(act_fake_quant(x, 8), torch.tensor([[-1.0, 0.0, 0.0, 127.0]]))  # round half to even
    assert torch.equal(act_fake_quant(torch.zeros(3), 8), torch.zeros(3))
    x = x.requires_grad_(True)
    y = ActFakeQuant(8)(None, (x,))[0]
    y.sum().backward()
    assert torch.equal(y.detach(), act_fake_quant(x.detach(), 8)) and torch.equal(x.grad, torch.ones_like(x))


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.emb, self.lin = nn.Embedding(10, 4), nn.Linear(4, 4, bias=False)

    def forward(self, ids):
        return self.lin(self.emb(ids))


@pytest.mark.parametrize("scheme", [MDS, PACT, LSQ, LAQ])
def test_wea_bits_embeddings_and_activation_hooks(scheme):
    m = Tiny()
    rep = quantize_model(m, scheme(bits=2, embed_bits=4, act_bits=8), ["*"], []).summary()
    assert rep["wea"] == "2-4-8"
    assert m.emb.parametrizations.weight[0].bits == 4 and m.lin.parametrizations.weight[0].bits == 2
    assert {x["name"]: x["bits"] for x in rep["layers"]} == {"emb.weight": 4, "lin.weight": 2}
    ids = torch.tensor([[1, 2, 3]])
    ref = act_fake_quant(m.emb(ids), 8) @ m.lin.weight.t()
    assert torch.equal(m(ids), ref)  # the Linear sees 8-bit inputs
    assert len(m.lin._forward_pre_hooks) == 1 and not m.emb._forward_pre_hooks


@pytest.mark.parametrize("scheme", [MDS, PACT, LSQ, LAQ])
@pytest.mark.parametrize("bits", [1, 2, 3, 8])
def test_packed_state_rebuilds_the_forward_value_bit_for_bit(scheme, bits):
    if scheme is LSQ and bits == 1:  # nothing to pack: LSQ refuses 1 bit
        with pytest.raises(QbenchError, match="needs bits >= 2"):
            LSQ(bits=1)
        return
    w = torch.randn(16, 24, generator=torch.Generator().manual_seed(bits)) * 0.05
    p = scheme(bits=bits).parametrization(w, transposed=True)
    state = p.packed_state(w)
    assert 0 <= state["codes"].min() and state["codes"].max() < 2**bits and state["codes"].numel() == w.numel()
    info = {"dtype": "float32", "shape": list(w.shape), "bits": bits, "transposed": True}
    assert torch.equal(type(p).unpack(state, info), p(w))


def test_linear_and_kmeans_accept_embed_and_act_bits():
    from qbench.quant.kmeans import KMeans
    from qbench.quant.linear import Linear

    for s in (Linear(bits=2, embed_bits=8, act_bits=8), KMeans(bits=3, embed_bits=4)):
        m = Tiny()
        quantize_model(m, s, ["*"], [])
        assert m.emb.parametrizations.weight[0].bits == s.embed_bits
    assert KMeans(bits=3, embed_bits=4).describe()["wea"] == "3-4-32"
    with pytest.raises(QbenchError, match="act_bits"):
        MDS(bits=2, act_bits=9)


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
@pytest.mark.parametrize("scheme", [PACT, LSQ, MDS, LAQ])
def test_closed_form_gradients_equal_autograd_of_grad_path(scheme, bits):
    """Training runs each scheme's `grads` (one autograd node, int8 levels saved); the reference is autograd through
    grad_path (fused = False): the same value bit for bit and the same gradients to the latent and the range,
    with weights placed exactly on the clip and beyond it."""
    if scheme is LSQ and bits == 1:
        return  # LSQ has no 1-bit grid
    g = torch.Generator().manual_seed(bits)
    w0 = torch.randn(64, 48, generator=g) * 0.05
    w0[0, :4] = torch.tensor([1.0, -1.0, 0.5, -0.3])  # outliers: clipped by the mse init
    up = torch.randn(64, 48, generator=g)
    make = lambda: scheme(bits=bits).parametrization(w0, transposed=False)  # noqa: E731
    if scheme in (PACT, MDS):  # a weight exactly on the clip α (grad_path's `w >= α` side); α (its init, and MDS's
        clip = lambda p: float(p.alpha.detach().abs() if scheme is PACT else p.alpha(w0))  # noqa: E731
        for _ in range(20):  # γ·mean|w|) moves with that weight: iterate to the fixed point
            w0[1, 0] = clip(make())
        assert w0[1, 0] == clip(make())
    out = []
    for fused in (True, False):
        p = make()
        p.fused = fused
        w = w0.clone().requires_grad_(True)
        q = p(w)
        (q * up).sum().backward()
        learned = [x.grad for x in p.parameters()]
        out.append((q.detach(), w.grad, learned))
    (qf, gwf, lf), (qa, gwa, la) = out
    assert torch.equal(qf, qa)
    assert torch.allclose(gwf, gwa, rtol=1e-6, atol=1e-7) and (gwf == 0).any() == (scheme is not LAQ)
    assert len(lf) == len(la) == (0 if scheme is LAQ else 1)
    for a, b in zip(lf, la, strict=True):
        assert a.item() == pytest.approx(b.item(), rel=1e-5, abs=1e-6) and a.item() != 0
