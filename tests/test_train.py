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
