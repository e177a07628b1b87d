"""Codebook diagnostics (qbench.quant.diagnostics) in the quantization report: entries used and dead, usage entropy,
SQNR and pathologies, for k-means (each granularity), linear, NF4 and the scaled QAT schemes."""

import math

import pytest
import torch
from torch import nn

from qbench.quant.diagnostics import collapsed_rows, usage
from qbench.quant.kmeans import KMeans
from qbench.quant.linear import Linear
from qbench.quant.lsq import LSQ
from qbench.quant.nf4 import NF4
from qbench.quant.pact import PACT
from qbench.quant.primitives import sqnr_db
from qbench.quant.wiring import quantize_model


def test_usage_hand_computed():
    codes = torch.tensor([0, 0, 1, 1, 3, 3, 3, 3])  # 2 codebooks of 4 entries: {0: 2, 1: 2} and {3: 4}
    u = usage(codes, 2, 4)
    assert (u["entries_used"], u["dead_entries"], u["codebooks_with_dead"], u["min_entries_used"]) == (3, 5, 2, 1)
    assert u["entropy_bits"] == pytest.approx((1.0 + 0.0) / 2)  # 1 bit (two equal halves), 0 bits


def test_collapsed_rows_ignore_constant_latent_rows():
    w = torch.tensor([[1.0, 2.0], [3.0, 3.0], [0.0, 1.0]])
    wq = torch.tensor([[1.5, 1.5], [3.0, 3.0], [0.0, 1.0]])
    assert collapsed_rows(w, wq, transposed=False) == 1  # row 0; row 1 was constant already
    assert collapsed_rows(w.t(), wq.t(), transposed=True) == 1


SCHEMES = {
    "kmeans": KMeans(bits=2),
    "kmeans-row": KMeans(bits=2, granularity="row"),
    "kmeans-group": KMeans(bits=2, granularity="group", group_size=8),
    "linear": Linear(bits=2),
    "linear-sym-row": Linear(bits=2, symmetric=True, granularity="row"),
    "nf4": NF4(bits=4, block_size=16),
    "lsq": LSQ(bits=2),
    "pact": PACT(bits=2),
}


@pytest.mark.parametrize("name", SCHEMES)
def test_every_scheme_reports_diagnostics(name):
    model = nn.Sequential(nn.Linear(16, 8), nn.Linear(8, 4))
    torch.manual_seed(0)
    rep = quantize_model(model, SCHEMES[name], ["*"], [])
    d = rep.summary()["diagnostics"]
    assert d["summary"]["tensors"] == 2 and len(d["tensors"]) == 2
    for t, layer in zip(d["tensors"], rep.summary()["layers"], strict=True):
        assert t["name"] == layer["name"] and t["sqnr_db"] == layer["sqnr_db"]
        assert 1 <= t["min_entries_used"] <= t["entries"]
        assert t["entries_used"] + t["dead_entries"] == t["codebooks"] * t["entries"]
        assert 0 <= t["entropy_bits"] <= math.log2(t["entries"]) + 1e-9
    s = d["summary"]
    assert s["entries_used"] + s["dead_entries"] == s["entries"]
    assert s["min_sqnr_db"] <= s["sqnr_db"]
    layouts = {"kmeans": (1, 4), "kmeans-row": (8, 4), "kmeans-group": (16, 4), "linear": (1, 4),
               "linear-sym-row": (8, 3), "nf4": (1, 16), "lsq": (1, 4), "pact": (1, 3)}  # fmt: skip
    assert (d["tensors"][0]["codebooks"], d["tensors"][0]["entries"]) == layouts[name]


def test_sqnr_is_of_the_quantized_vs_latent_weight():
    lin = nn.Linear(16, 8)
    w = lin.weight.detach().clone()
    rep = quantize_model(lin, KMeans(bits=3), ["*"], [])
    with torch.no_grad():
        assert rep.summary()["diagnostics"]["tensors"][0]["sqnr_db"] == sqnr_db(w, lin.weight)


def test_pathologies_flag_dead_centroids_and_collapsed_rows():
    lin = nn.Linear(4, 3)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 10.0], [1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]))
    # 4 bits, 4 weights per row: at most 4 of 16 centroids per row in use; a linear 1-bit tensor-wide grid {0, 10}
    d = quantize_model(lin, KMeans(bits=4, granularity="row"), ["*"], []).summary()["diagnostics"]
    issues = {p["issue"]: p for p in d["pathologies"]}
    assert issues["dead_entries"]["count"] == 3 * 16 - (2 + 4 + 1) and issues["dead_entries"]["codebooks"] == 3
    assert "collapsed_rows" not in issues  # row 2 was constant in the latent weight already
    lin2 = nn.Linear(4, 3)
    with torch.no_grad():
        lin2.weight.copy_(torch.tensor([[0.0, 0.0, 0.0, 10.0], [1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0]]))
    d2 = quantize_model(lin2, Linear(bits=1), ["*"], []).summary()["diagnostics"]  # levels {0, 10}
    assert {"tensor": "weight", "issue": "collapsed_rows", "count": 1} in d2["pathologies"]  # row 1 -> all 0
