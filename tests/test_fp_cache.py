"""The full-precision fine-tune cache (qbench.fp_cache): trained once per (model, task, seed, training, data), then
loaded by ptq cells and teachers; its key ignores the quantization stage. The pipeline runs in this process."""

from __future__ import annotations

from hydra import compose, initialize_config_module

import qbench.cli  # noqa: F401  (registers the cell_id resolver the config uses)
from qbench.cell import parse
from qbench.fp_cache import is_cached
from qbench.pipeline import run

DEBUG = ["train=debug", "train.max_eval_examples=32", "model=tiny_bert", "task=wnli"]


def cell(tmp_path, data_dir, *overrides):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=[*DEBUG, f"data_dir={data_dir}", f"cache_dir={tmp_path / 'cache'}",
                                           *overrides])  # fmt: skip
    return parse(cfg)


def test_full_precision_model_is_fine_tuned_once_and_reused(tmp_path, data_dir):
    fp = cell(tmp_path, data_dir, "scheme=none")
    assert not is_cached(fp.fp_cache)
    baseline = run(fp, tmp_path / "fp")["training"]["full_precision"]
    assert baseline["cached"] is None and is_cached(fp.fp_cache)
    for bits in (2, 4):  # ptq reuses the baseline's fine-tuned model instead of training again
        c = cell(tmp_path, data_dir, "scheme=kmeans", f"bits={bits}", "train.order=ptq")
        assert c.fp_cache == fp.fp_cache  # the quantization stage is not part of the key
        r = run(c, tmp_path / str(bits))
        assert r["training"]["full_precision"]["cached"] == str(fp.fp_cache)
        assert r["training"]["full_precision"]["steps"] == baseline["steps"]
        assert r["timings"]["train_fp"] < 15


def test_other_training_settings_get_their_own_entry(tmp_path, data_dir):
    a, b = cell(tmp_path, data_dir, "scheme=none"), cell(tmp_path, data_dir, "scheme=none", "train.lr=1e-4")
    assert a.fp_cache != b.fp_cache and a.fp_cache.parent == b.fp_cache.parent == tmp_path / "cache" / "finetuned"
