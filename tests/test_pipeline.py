"""The pipeline in-process on a tiny model and real data: QAT-stage overrides (train.qat.*)."""

import pytest
from hydra import compose, initialize_config_module

import qbench.cli  # noqa: F401  (registers the cell_id resolver the config uses)
from qbench.cell import parse
from qbench.errors import QbenchError
from qbench.pipeline import run


def cell(tmp_path, *overrides):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        return compose("config", overrides=["model=tiny_bert", "task=sst2", "train=debug", "scheme=kmeans",
                                             f"cache_dir={tmp_path / 'cache'}", *overrides])  # fmt: skip


def test_qat_stage_trains_on_its_own_settings(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    cfg = cell(tmp_path, "train.order=ft_then_qat", "train.qat.max_train_examples=16", "train.qat.epochs=2")
    r = run(cfg, tmp_path / "run")
    assert r["training"]["full_precision"]["steps"] == 4  # 64 examples / batch 16, 1 epoch
    assert r["training"]["qat"]["steps"] == 2  # the first 16 of them, 2 epochs
    assert r["data"]["train"]["file"] == "train.parquet" and len(r["data"]["train"]["sha256"]) == 16
    again = run(cell(tmp_path, "train.order=ft_then_qat", "train.qat.epochs=1"), tmp_path / "run2")
    assert again["training"]["full_precision"]["cached"]  # train.qat does not change the FP fine-tune
    assert again["training"]["qat"]["steps"] == 4


def test_qat_cap_above_the_fp_cap_is_refused(tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    with pytest.raises(QbenchError, match="train.qat.max_train_examples=100: at most train.max_train_examples=64"):
        parse(cell(tmp_path, "train.order=ft_then_qat", "train.qat.max_train_examples=100"))


def test_predictions_keep_the_dataset_order_under_length_grouping(tmp_path, data_dir, monkeypatch):
    # transformers 5 groups evaluation batches by length too when train_sampling_strategy=group_by_length: the
    # outputs came back shuffled against the labels (a trained SST-2 model scored 49 %)
    import torch

    from qbench.kinds import classification as C
    from qbench.train import predict

    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    c = parse(cell(tmp_path, "train.sampler=group_by_length", "train.eval_batch_size=8"))
    model, tok = C.load_model(c.model, c.task, 0)
    enc = C.load_data(c, tok, need_train=False)["validation"].inputs
    out = torch.as_tensor(predict(model, enc, C.collator(tok), c.train, 0, "cpu"))
    with torch.no_grad():
        model.eval()
        inputs = enc.select_columns([c for c in enc.column_names if c in tok.model_input_names])
        one = torch.cat([model(**C.collator(tok)([x])).logits for x in inputs])
    assert torch.allclose(out, one, atol=1e-5)


def test_per_task_settings_apply_to_their_task_only(tmp_path, data_dir, monkeypatch):
    from qbench.sweep import cell_id

    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    base = cell_id(cell(tmp_path))
    assert cell_id(cell(tmp_path, "+train.tasks.rte.epochs=5")) == base  # another task's entry: the same cell
    assert cell_id(cell(tmp_path, "+train.tasks.sst2.epochs=2")) == cell_id(cell(tmp_path, "train.epochs=2")) != base
    r = run(cell(tmp_path, "scheme=none", "+train.tasks.sst2.max_train_examples=32"), tmp_path / "run")
    assert r["training"]["full_precision"]["steps"] == 2 and "tasks" not in r["config"]["train"]
    assert r["config"]["train"]["max_train_examples"] == 32
    with pytest.raises(QbenchError, match="train.tasks"):
        parse(cell(tmp_path, "+train.tasks.sst2.order=ptq"))


def test_quantizer_lr_reaches_the_record(tmp_path, data_dir, monkeypatch):
    """train.qat.quantizer_lr: the record holds every optimizer group's lr and weight decay, and how far the learned
    ranges moved (diagnosis.range_moves); schemes without a learned range, or stages that do not train, refuse it."""
    monkeypatch.setenv("QBENCH_DATA_DIR", str(data_dir))
    r = run(cell(tmp_path, "scheme=mds", "train.qat.quantizer_lr=0.3", "train.weight_decay=0.01"), tmp_path / "run")
    groups = r["training"]["qat"]["param_groups"]
    assert [(g["lr"], g["weight_decay"]) for g in groups] == [(1e-3, 0.01), (1e-3, 0.0), (0.3, 0.0)]
    assert groups[2]["ranges"] == groups[2]["tensors"] == r["scheme"]["quantized_tensors"]
    moves = r["diagnosis"]["range_moves"]["gamma"]
    assert moves["tensors"] == r["scheme"]["quantized_tensors"] and moves["median"] > 0.1
    assert r["config"]["train"]["qat"]["quantizer_lr"] == 0.3
    for bad in (["scheme=laq"], ["scheme=kmeans"], ["scheme=mds", "train.order=ptq"]):
        with pytest.raises(QbenchError, match="train.qat.quantizer_lr=0.3: only a quantization-aware stage"):
            parse(cell(tmp_path, *bad, "train.qat.quantizer_lr=0.3"))
