"""The calibration stage (qbench.calibrate, Scheme.calibration): data-aware schemes defined here run through the real
pipeline on a tiny model and real SST-2 rows, and receive each tensor's statistics with its name."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

import pytest
import torch
from hydra import compose, initialize_config_module
from torch import nn

import qbench.cli  # noqa: F401  (registers the cell_id resolver the config uses)
from qbench.cell import parse
from qbench.errors import QbenchError
from qbench.kinds import classification as C
from qbench.pipeline import run
from qbench.quant.checkpoint import PACKED_NAME, load_packed
from qbench.quant.kmeans import Codebook, KMeans
from qbench.quant.linear import Linear
from qbench.quant.schemes import Calibration, Scheme
from qbench.quant.wiring import quantize_model

SEEN: list[tuple[str, torch.Tensor, dict]] = []  # (name, weight, stats) per parametrization the schemes built


@dataclass(frozen=True)
class Recorder(Linear):
    """Linear quantization that asks for both statistics over 2 batches and keeps what it was given."""

    name: ClassVar[str] = "recorder"

    def calibration(self) -> Calibration:
        return Calibration(("grad_sq", "inputs"), batches=2)

    def parametrization(self, weight, transposed, *, name="", stats=None) -> nn.Module:
        SEEN.append((name, weight.clone(), stats))
        return super().parametrization(weight, transposed, name=name, stats=stats)


@dataclass(frozen=True)
class FisherSplit(Scheme):
    """1 bit chosen by the data: weights of above-median squared gradient share one centroid, the others another
    (each the mean of its members), a toy Fisher-aware codebook."""

    name: ClassVar[str] = "fisher_split"
    latent_trained: ClassVar[bool] = False

    def calibration(self) -> Calibration:
        return Calibration(("grad_sq",), batches=3)

    def parametrization(self, weight, transposed, *, name="", stats=None) -> nn.Module:
        SEEN.append((name, weight.clone(), stats))
        labels = (stats["grad_sq"] > stats["grad_sq"].median()).long()  # like weight
        centroids = torch.stack([weight[labels == k].mean() for k in (0, 1)])  # (2,)
        return Codebook(centroids, labels)


def cell(tmp_path, data_dir, scheme: Scheme, *overrides):
    """The parsed cell of tiny BERT on SST-2 (train=debug) with `scheme` in place of the configured one."""
    with initialize_config_module("qbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_bert", "task=sst2", "train=debug", f"data_dir={data_dir}",
                                           f"cache_dir={tmp_path / 'cache'}", *overrides])  # fmt: skip
    return replace(parse(cfg), scheme=scheme)


def test_each_tensor_gets_its_name_and_statistics(tmp_path, data_dir):
    SEEN.clear()
    c = cell(tmp_path, data_dir, Recorder(bits=2))
    r = run(c, tmp_path / "run")
    assert r["status"] == "completed" and "calibrate" in r["timings"]
    assert [name for name, _, _ in SEEN] == [t["name"] for t in r["scheme"]["layers"]]  # every tensor, by name
    for name, weight, stats in SEEN:
        shape = weight.shape
        assert stats["grad_sq"].shape == shape and (stats["grad_sq"] >= 0).all()
        if "embeddings" in name:
            assert "inputs" not in stats  # an embedding's inputs are token ids
        else:  # Linear (out, in): every position of both batches, padding included
            assert stats["inputs"].dim() == 2 and stats["inputs"].shape[1] == shape[1]
    # grad_sq is the mean squared gradient of the task loss over the first 2 training batches, in order: recomputed
    # here on the same pre-trained model (order qat) with the kind's own collator
    model, tok = C.load_model(c.model, c.task, c.seed)
    rows = C.load_data(c, tok, need_train=True)["train"].inputs.remove_columns(["sentence", "idx"])
    b = c.train.batch_size
    model.eval()
    expect = 0
    for i in (0, b):
        model.zero_grad()
        model(**C.collator(tok)([rows[j] for j in range(i, i + b)])).loss.backward()
        expect = expect + model.bert.encoder.layer[0].attention.self.query.weight.grad.square() / 2
    got = dict((name, stats) for name, _, stats in SEEN)["bert.encoder.layer.0.attention.self.query.weight"]
    assert torch.allclose(got["grad_sq"], expect, rtol=1e-4, atol=1e-12)
    first_two = sum(C.collator(tok)([rows[j] for j in range(i, i + b)])["input_ids"].numel() for i in (0, b))
    assert got["inputs"].shape[0] == first_two


def test_squared_gradients_pick_the_codebook_groups(tmp_path, data_dir):
    SEEN.clear()
    r = run(cell(tmp_path, data_dir, FisherSplit(bits=1), "train.order=zeroshot", "export=true"), tmp_path / "run")
    # zeroshot trains nothing, yet the training split was read: calibration needs it
    assert r["status"] == "completed" and r["scheme"]["name"] == "fisher_split" and "train_qat" not in r["timings"]
    assert r["scheme"]["quantized_tensors"] == len(SEEN) > 0
    assert 1.0 < r["scheme"]["effective_bits"] < 1.01  # 1-bit codes plus one 2-entry fp32 codebook per tensor
    # the exported model: each weight is its group's mean, the group chosen by the squared gradient
    exported = load_packed(tmp_path / "run" / PACKED_NAME).state_dict()
    for name, weight, stats in SEEN:
        high = stats["grad_sq"] > stats["grad_sq"].median()
        assert 0 < high.sum() < high.numel()
        assert torch.equal(exported[name][high], weight[high].mean().expand(int(high.sum())))
        assert torch.equal(exported[name][~high], weight[~high].mean().expand(int((~high).sum())))


def test_fisher_weighted_kmeans_from_the_config(tmp_path, data_dir):
    # scheme=kmeans scheme.weighting=fisher: calibrated (2 batches) before clustering, and the codebooks differ from
    # plain k-means' on the same pre-trained weights
    def quantized(*overrides):
        with initialize_config_module("qbench.conf", version_base="1.3"):
            cfg = compose("config", overrides=["model=tiny_bert", "task=sst2", "train=debug", f"data_dir={data_dir}",
                                               f"cache_dir={tmp_path / 'cache'}", "scheme=kmeans", "bits=2",
                                               "train.order=zeroshot", "export=true", *overrides])  # fmt: skip
        c = parse(cfg)
        return c, run(c, tmp_path / "-".join(["run", *overrides]))

    c, r = quantized("scheme.weighting=fisher", "scheme.calib_batches=2")
    assert c.calibration == Calibration(("grad_sq",), 2)
    assert r["status"] == "completed" and "calibrate" in r["timings"] and r["scheme"]["weighting"] == "fisher"
    _, plain = quantized()
    assert "calibrate" not in plain["timings"] and "weighting" not in plain["scheme"]
    fisher_sqnr = [t["sqnr_db"] for t in r["scheme"]["layers"]]
    plain_sqnr = [t["sqnr_db"] for t in plain["scheme"]["layers"]]
    assert fisher_sqnr != plain_sqnr  # (unweighted k-means minimises the plain error: its SQNR is the higher)
    assert sum(plain_sqnr) > sum(fisher_sqnr)


def test_a_data_free_scheme_is_not_calibrated(tmp_path, data_dir):
    r = run(cell(tmp_path, data_dir, Linear(bits=2), "train.order=zeroshot"), tmp_path / "run")
    assert r["status"] == "completed" and "calibrate" not in r["timings"]


def test_the_scheme_says_whether_the_latent_weight_trains():
    for scheme, trains in ((Linear(bits=2), True), (KMeans(bits=2), False), (FisherSplit(bits=1), False)):
        model = nn.Sequential(nn.Linear(4, 3))
        stats = {"0.weight": {"grad_sq": torch.rand(3, 4)}}
        quantize_model(model, scheme, ["*"], [], stats)
        assert model[0].parametrizations.weight.original.requires_grad is trains


@pytest.mark.parametrize("stats,batches", [((), 1), (("fisher",), 1), (("grad_sq",), 0)])
def test_calibration_requests_are_validated(stats, batches):
    with pytest.raises(QbenchError):
        Calibration(stats, batches)
