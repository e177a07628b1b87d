"""Distillation losses by hand computation, and an end-to-end distilled QAT run with W-E-A bits."""

import math
import os
from pathlib import Path

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
    hand = 0.5 * (math.log(0.5 * z) + math.log(0.5 * z / math.sqrt(2))) * T * T  # T² · Σ p·log(p/q)
    assert kd_loss(s, t, T).item() == pytest.approx(hand, rel=1e-5)  # float32: KL is a small difference
    # per token with padding: (batch 1, 2 tokens, vocab 2), second token masked out
    s3, t3 = torch.stack([s[0], torch.tensor([5.0, -5.0])])[None], torch.stack([t[0], torch.tensor([0.0, 9.0])])[None]
    assert kd_loss(s3, t3, T, torch.tensor([[1, 0]])).item() == pytest.approx(hand, rel=1e-5)
    assert kd_loss(torch.tensor([[1.0], [3.0]]), torch.tensor([[2.0], [2.0]])).item() == pytest.approx(1.0)  # MSE


def test_kd_is_kl_zero_at_the_teacher_with_the_cross_entropy_gradient():
    g = torch.Generator().manual_seed(0)
    t, mask, T = torch.randn(3, 5, 7, generator=g) * 3, torch.randint(0, 2, (3, 5), generator=g), 2.0
    assert kd_loss(t.clone(), t, T, mask).abs().item() < 1e-6  # the old soft cross-entropy: T²·H(teacher) > 0
    assert kd_loss(t[:, 0].clone(), t[:, 0], T).abs().item() < 1e-6
    s = torch.randn(3, 5, 7, generator=g).requires_grad_(True)
    kd_loss(s, t, T, mask).backward()
    m = mask.bool()  # the gradient is the soft cross-entropy's: they differ by a constant (the teacher's entropy)
    ce = -(torch.softmax(t[m] / T, -1) * torch.log_softmax(s[m] / T, -1)).sum(-1).mean() * T * T
    (ce_grad,) = torch.autograd.grad(ce, s)
    torch.testing.assert_close(s.grad, ce_grad, rtol=1e-5, atol=1e-7)


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
    states = set((Path(os.environ["QBENCH_CACHE"]) / "teacher").iterdir())  # its outputs, cached (cache_teacher)
    assert any((e / "meta.json").is_file() for e in states)
    # the next distilled cell (same model, task, seed, training config) reads the teacher from the cache
    p = qbench("run", *common, "distill=kd", f"hydra.run.dir={tmp_path}/b")
    assert p.returncode == 0, p.stderr[-3000:]
    r = read_record(tmp_path / "b")
    assert r["training"]["teacher"]["cached"]
    assert set(r["training"]["qat"]["loss_components"]) == {"task", "kd", "weights"}
    assert r["scheme"]["wea"] == "2-2-32"
    assert set((Path(os.environ["QBENCH_CACHE"]) / "teacher").iterdir()) == states  # and its outputs, too


@pytest.mark.parametrize("bad", [["scheme=none"], ["train.order=ptq"]])
def test_distill_needs_qat(bad, data_dir):
    from hydra import compose, initialize_config_module

    import qbench.cli  # noqa: F401  (registers the cell_id resolver)
    from qbench.cell import parse

    with initialize_config_module("qbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["model=tiny_bert", "task=rte", "distill=kd", f"data_dir={data_dir}", *bad])
    with pytest.raises(QbenchError, match="quantization-aware"):
        parse(cfg)


def tcd_trainer(max_grad_norm: float, norms: list, out: Path):
    """DistillTrainer (TCD with projection, lr 0, 3 steps on one fixed batch, no dropout) of a tiny BERT (hidden 16)
    against a tiny teacher (hidden 24); `norms` collects, per step, the projection's gradient norm and the norm over
    all trained parameters, as the optimizer sees them (after clipping)."""
    import datasets
    from transformers import BertConfig, BertForSequenceClassification, TrainerCallback, TrainingArguments

    from qbench.distill import DistillTrainer

    def bert(hidden):
        torch.manual_seed(hidden)
        cfg = BertConfig(vocab_size=50, hidden_size=hidden, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)  # fmt: skip
        return BertForSequenceClassification(cfg)

    class Norms(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            params = {id(p): p for p in [*trainer.model.parameters(), *trainer.proj.parameters()]}.values()
            total = torch.cat([p.grad.flatten() for p in params if p.grad is not None]).norm().item()
            norms.append((torch.cat([p.grad.flatten() for p in trainer.proj.parameters()]).norm().item(), total))

    ids = torch.randint(1, 50, (4, 6), generator=torch.Generator().manual_seed(0))
    ds = datasets.Dataset.from_dict({"input_ids": ids.tolist(), "attention_mask": [[1] * 6] * 4, "labels": [0, 1] * 2})
    args = TrainingArguments(output_dir=str(out), per_device_train_batch_size=4, max_steps=3,
                             learning_rate=0.0, max_grad_norm=max_grad_norm, report_to="none", use_cpu=True,
                             save_strategy="no", disable_tqdm=True, seed=0)  # fmt: skip
    spec = DistillSpec(name="tcd", tcd_weight=1.0, projection=True)
    trainer = DistillTrainer(model=bert(16), args=args, train_dataset=ds, teacher=bert(24), spec=spec,
                             callbacks=[Norms()])  # fmt: skip
    return trainer


def test_tcd_projection_is_zeroed_between_steps_and_clipped(tmp_path):
    norms = []
    tcd_trainer(0.0, norms, tmp_path).train()  # no clipping: with lr 0 and one batch every step has the same gradient
    assert len(norms) == 3 and norms[0][0] > 0
    for proj, _ in norms[1:]:
        assert proj == pytest.approx(norms[0][0], rel=1e-4)  # not accumulated across steps (1x, 2x, 3x)
    clipped = []
    trainer = tcd_trainer(1e-3, clipped, tmp_path)
    trainer.train()
    assert all(total <= 1e-3 * (1 + 1e-4) for _, total in clipped)  # clipping covers the projection
    assert any(p is trainer.proj.weight for g in trainer.optimizer.param_groups for p in g["params"])
    # the projection only serves training: the student leaves train() without it (not exported, packed, counted)
    assert not any("proj" in k for k in trainer.model.state_dict())
    assert not any(p is trainer.proj.weight for p in trainer.model.parameters())
