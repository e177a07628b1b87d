"""Training stages (qbench.train): TensorBoard logging of the loss and distillation's parts, in-process."""

import pytest
from hydra import compose, initialize_config_module

import qbench.cli  # noqa: F401  (registers the cell_id resolver the config uses)
from qbench.pipeline import run
from qbench.sweep import cell_id


def cell(tmp_path, *overrides):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        return compose("config", overrides=["model=tiny_bert", "task=sst2", "train=debug", "scheme=kmeans",
                                             f"cache_dir={tmp_path / 'cache'}", *overrides])  # fmt: skip


def scalars(folder) -> dict[str, list[tuple[int, float]]]:
    """{tag: [(step, value)]} of the one event file in folder."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = folder.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    return {t: [(e.step, e.value) for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}


def same_curve(a, b) -> bool:
    """Equal steps and values within float32 rounding (TensorBoard stores float32)."""
    return [s for s, _ in a] == [s for s, _ in b] and [v for _, v in a] == pytest.approx([v for _, v in b], rel=1e-6)


def test_tensorboard_holds_each_stage_loss_and_distillation_parts(tmp_path, data_dir, monkeypatch):
    pytest.importorskip("tensorboard")
    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    over = ["train.order=ft_then_qat", "train.logging_steps=1", "distill=kd_tcd", "train.report_to=tensorboard"]
    r = run(cell(tmp_path, *over), tmp_path / "run")
    fp, qat = scalars(tmp_path / "run/tensorboard/full_precision"), scalars(tmp_path / "run/tensorboard/qat")
    # one point per logged step, the same values the record's loss curve holds
    assert [s for s, _ in fp["train/loss"]] == [1, 2, 3, 4]
    assert same_curve(fp["train/loss"], r["training"]["full_precision"]["loss_curve"])
    assert {"train/loss", "train/loss_task", "train/loss_kd", "train/loss_tcd", "train/learning_rate"} <= set(qat)
    assert same_curve(qat["train/loss"], r["training"]["qat"]["loss_curve"])
    assert same_curve(qat["train/loss_task"], r["training"]["qat"]["task_loss_curve"])  # the task loss alone
    assert "task_loss_curve" not in r["training"]["full_precision"]  # no distillation there
    mean_kd = sum(v for _, v in qat["train/loss_kd"]) / len(qat["train/loss_kd"])
    assert mean_kd == pytest.approx(r["training"]["qat"]["loss_components"]["kd"], rel=1e-5)


def test_tensorboard_is_off_by_default_and_not_part_of_the_cell(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    assert cell_id(cell(tmp_path, "train.report_to=tensorboard")) == cell_id(cell(tmp_path))
    run(cell(tmp_path, "scheme=none"), tmp_path / "run")
    assert not (tmp_path / "run/tensorboard").exists()


# --- train.qat.quantizer_lr: the learned ranges' own optimizer group ---
def stage(**over):
    """conf/train/default.yaml as a TrainSchema, with `over` on top."""
    from omegaconf import OmegaConf

    from qbench.config import TrainSchema
    from tests.conftest import REPO

    node = OmegaConf.merge(OmegaConf.structured(TrainSchema), OmegaConf.load(REPO / "conf/train/default.yaml"), over)
    return OmegaConf.to_object(node)


def tiny_qat(scheme, steps: int = 4, quantizer_lr=None, callbacks=None, **over):
    """(model, finetune's info, range_moves) of `steps` QAT steps of a tiny random BERT quantized by `scheme`."""
    import torch
    from datasets import Dataset
    from transformers import default_data_collator

    from qbench.diagnose import module_ranges, range_moves, with_init
    from qbench.quant.wiring import quantize_model
    from qbench.train import finetune
    from tests.tiny import tiny_bert

    torch.set_num_threads(1)
    model = tiny_bert().train()
    quantize_model(model, scheme, ["*.encoder.*"], [])
    g = torch.Generator().manual_seed(0)
    ds = Dataset.from_dict({"input_ids": torch.randint(1, 100, (8 * steps, 12), generator=g).tolist(),
                            "labels": torch.randint(0, 2, (8 * steps,), generator=g).tolist()})  # fmt: skip
    start = module_ranges(model)
    train = stage(lr=1e-4, batch_size=8, max_steps=steps, logging_steps=1, progress_bar=False, **over)
    info = finetune(model, ds, default_data_collator, train, 0, "cpu", callbacks=callbacks, quantizer_lr=quantizer_lr)
    return model, info, range_moves(with_init(module_ranges(model), start))


# rates for the scale of each range: PACT's α and LSQ's s are clips and steps of weights of std 0.02 (α ~ 0.04),
# MDS's γ a multiple of mean|w| (~ 2.4). Adam moves a parameter by about lr per step; the linear decay over 4 steps
# gives 2.5 lr in all
@pytest.mark.parametrize("name, learned, qlr", [("pact", "alpha", 0.01), ("lsq", "s", 0.01), ("mds", "gamma", 0.3)])
def test_a_quantizer_lr_moves_the_learned_ranges(name, learned, qlr):
    from qbench.quant.lsq import LSQ
    from qbench.quant.mds import MDS
    from qbench.quant.pact import PACT

    scheme = {"pact": PACT, "lsq": LSQ, "mds": MDS}[name](bits=2)
    _, info, moves = tiny_qat(scheme, quantizer_lr=qlr)
    assert moves[learned]["tensors"] == 12 and moves[learned]["median"] > 0.2  # 12 Linear weights, each > 20 %
    *_, default = tiny_qat(scheme)  # the same 4 steps, every parameter at lr 1e-4: the ranges move 1 % at most
    assert default[learned]["max"] < 0.01
    quant = [g for g in info["param_groups"] if g["ranges"]]
    assert quant == [{"lr": qlr, "weight_decay": 0.0, "tensors": 12, "ranges": 12}]


def test_the_quantizer_group_follows_the_weights_schedule():
    from transformers import TrainerCallback

    from qbench.quant.mds import MDS

    class Rates(TrainerCallback):  # every group's rate after each optimizer step
        seen = []

        def on_step_end(self, args, state, control, optimizer=None, **kwargs):
            self.seen.append([g["lr"] for g in getattr(optimizer, "optimizer", optimizer).param_groups])

    tiny_qat(MDS(bits=2), steps=6, quantizer_lr=0.05, callbacks=[Rates()], warmup=2)
    assert len(Rates.seen) == 6 and max(r[0] for r in Rates.seen) == pytest.approx(1e-4)
    for weights, _, ranges in Rates.seen:  # warmup, then linear decay: the same factor of each group's rate
        assert ranges / 0.05 == pytest.approx(weights / 1e-4)


def test_quantizer_lr_null_keeps_trainers_groups_and_equal_lr_the_same_training():
    import torch

    from qbench.quant.mds import MDS

    _, info, _ = tiny_qat(MDS(bits=2), weight_decay=0.01)
    # null: Trainer's own two groups (decayed, not decayed) at the stage's lr; the ranges train with the weights
    assert [(g["lr"], g["weight_decay"]) for g in info["param_groups"]] == [(1e-4, 0.01), (1e-4, 0.0)]
    assert info["param_groups"][0]["ranges"] == 12 and info["param_groups"][1]["ranges"] == 0
    # the ranges' own group at the stage's lr: the same training except weight decay (0 on the ranges)
    same, info2, _ = tiny_qat(MDS(bits=2), weight_decay=0.0, quantizer_lr=1e-4)
    plain0, info0, _ = tiny_qat(MDS(bits=2), weight_decay=0.0)
    assert [(g["lr"], g["weight_decay"], g["ranges"]) for g in info2["param_groups"]] == [
        (1e-4, 0.0, 0), (1e-4, 0.0, 0), (1e-4, 0.0, 12)]  # fmt: skip
    assert info2["loss_curve"] == info0["loss_curve"]
    a, b = dict(same.named_parameters()), dict(plain0.named_parameters())
    assert all(torch.equal(a[n], b[n]) for n in a)
