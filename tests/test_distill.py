"""Distillation losses by hand computation, and an end-to-end distilled QAT run with W-E-A bits."""

import math

import pytest
import torch

from qbench.distill import DistillSpec, kd_loss, tcd_loss
from qbench.errors import QbenchError
from tests.conftest import qbench, read_record

R = 1 / math.sqrt(2)
# 2 sequences x 2 tokens, dim 2 (normalised below by the loss itself)
STUDENT = torch.tensor([[[1.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [-3.0, 0.0]]])
TEACHER = torch.tensor([[[2.0, 0.0], [1.0, 1.0]], [[0.0, 1.0], [-1.0, -1.0]]])
# cosines student i (rows) x teacher j (columns), by hand:
# s = (1,0), (0,1), (R,R), (-1,0); t = (1,0), (R,R), (0,1), (-R,-R)
COS = [[1, R, 0, -R], [0, R, 1, -R], [R, 1, R, -1], [-1, -R, 0, R]]


def info_nce(rows, tau, pos):
    return sum(
        math.log(sum(math.exp(c / tau) for c in row)) - row[p] / tau for row, p in zip(rows, pos, strict=True)
    ) / len(rows)


def test_tcd_equals_hand_computation():
    tau = 0.5
    pos = list(range(4))
    assert tcd_loss(STUDENT, TEACHER, None, tau).item() == pytest.approx(info_nce(COS, tau, pos), rel=1e-6)
    # padding: the last token of sequence 2 is neither an anchor nor a negative
    mask = torch.tensor([[1, 1], [1, 0]])
    sub = [row[:3] for row in COS[:3]]
    assert tcd_loss(STUDENT, TEACHER, mask, tau).item() == pytest.approx(info_nce(sub, tau, pos[:3]), rel=1e-6)
    # a memory bank of past teacher tokens adds negatives; without in-batch negatives only the positive and the bank
    bank = torch.tensor([[0.0, 1.0]])
    with_bank = [row + [[0, 1, R, 0][i]] for i, row in enumerate(COS)]
    assert tcd_loss(STUDENT, TEACHER, None, tau, bank).item() == pytest.approx(info_nce(with_bank, tau, pos))
    only_bank = [[COS[i][i], [0, 1, R, 0][i]] for i in range(4)]
    got = tcd_loss(STUDENT, TEACHER, None, tau, bank, in_batch=False).item()
    assert got == pytest.approx(info_nce(only_bank, tau, [0] * 4))


def test_tcd_gradient_reaches_only_the_student():
    s, t = STUDENT.clone().requires_grad_(True), TEACHER.clone().requires_grad_(True)
    tcd_loss(s, t, None, 0.1).backward()
    assert s.grad.abs().sum() > 0 and t.grad is None


def test_kd_equals_hand_computation():
    s, t, T = torch.tensor([[0.0, math.log(2)]]), torch.tensor([[0.0, 0.0]]), 2.0
    z = 1 + math.sqrt(2)  # student/T = (0, ln2/2): softmax (1, sqrt 2)/z; teacher (1/2, 1/2)
    hand = -0.5 * (math.log(1 / z) + math.log(math.sqrt(2) / z)) * T * T
    assert kd_loss(s, t, T).item() == pytest.approx(hand)
    # per token with padding: (batch 1, 2 tokens, vocab 2), second token masked out
    s3, t3 = torch.stack([s[0], torch.tensor([5.0, -5.0])])[None], torch.stack([t[0], torch.tensor([0.0, 9.0])])[None]
    assert kd_loss(s3, t3, T, torch.tensor([[1, 0]])).item() == pytest.approx(hand)
    assert kd_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [2.0]])).item() == pytest.approx(1.0)  # MSE


def test_spec_validation():
    with pytest.raises(QbenchError, match="unknown"):
        DistillSpec.from_config({"name": "x", "kd_weigth": 1})
    with pytest.raises(QbenchError, match="negatives"):
        DistillSpec(tcd_weight=1, in_batch=False)
    assert not DistillSpec().active and DistillSpec(kd_weight=1).active


def test_distilled_mds_qat_record(tmp_path, data_dir):
    common = [
        "train=debug",
        "train.max_eval_examples=16",
        "train.max_train_examples=32",
        "model=tiny_bert",
        "task=rte",
        "scheme=mds",
        "bits=2",
    ]
    p = qbench("run", *common, "act_bits=8", "distill=kd_tcd", "distill.bank_size=64", f"hydra.run.dir={tmp_path}/a")
    assert p.returncode == 0, p.stderr[-3000:]
    r = read_record(tmp_path / "a")
    assert r["scheme"]["wea"] == "2-2-8" and r["scheme"]["act_bits"] == 8 and r["scheme"]["name"] == "mds"
    assert r["distill"]["name"] == "kd_tcd" and r["distill"]["bank_size"] == 64
    comp = r["training"]["qat"]["loss_components"]
    assert set(comp) == {"task", "kd", "tcd", "weights"} and all(math.isfinite(comp[k]) for k in ("task", "kd", "tcd"))
    assert r["training"]["teacher"]["cached"] is None and "teacher" in r["timings"]  # fine-tuned once, here
    # the next distilled cell (same model, task, seed, training config) reads the teacher from the cache
    p = qbench("run", *common, "distill=kd", f"hydra.run.dir={tmp_path}/b")
    assert p.returncode == 0, p.stderr[-3000:]
    r = read_record(tmp_path / "b")
    assert r["training"]["teacher"]["cached"]
    assert set(r["training"]["qat"]["loss_components"]) == {"task", "kd", "weights"}
    assert r["scheme"]["wea"] == "2-2-32"


@pytest.mark.parametrize("bad", [["scheme=none"], ["train.order=ptq"]])
def test_distill_needs_qat(bad, data_dir):
    from hydra import compose, initialize_config_module

    import qbench.cli  # noqa: F401  (registers the cell_id resolver)
    from qbench.pipeline import validate

    with initialize_config_module("qbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_bert", "task=rte", "distill=kd", f"data_dir={data_dir}", *bad])
    with pytest.raises(QbenchError, match="quantization-aware"):
        validate(cfg)
