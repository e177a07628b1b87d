"""Every config key that can change a result is part of the cell id and of the FP cache key, or is listed as
deliberately excluded (qbench.sweep); local data are identified by content, not by path."""

from __future__ import annotations

import copy
import shutil

import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from qbench.config import task_overrides
from qbench.fp_cache import fp_cache_dir
from qbench.sweep import BOOKKEEPING, EXCLUDED, QUANT_STAGE, cell_id, flatten, under, unused
from tests.conftest import DATA, REPO

GROUPS = ("model", "task", "scheme", "train", "distill")
# one composed config per option of every group (the rest default), and distillation that is on
OVERRIDES = [[], ["scheme=mds", "act_bits=8", "distill=kd_tcd", "train.order=ft_then_qat"]] + [
    [f"{g}={p.stem}"] for g in GROUPS for p in sorted((REPO / "conf" / g).glob("*.yaml"))
]
OTHER_TARGET = {"qbench.quant.schemes.NoQuant": "qbench.quant.linear.Linear"}


def composed(*overrides: str) -> dict:
    with initialize_config_module("qbench.conf", version_base="1.3"):
        return OmegaConf.to_container(compose("config", overrides=[f"data_dir={DATA}", *overrides]), resolve=True)


def keys(d: dict) -> tuple[str, str]:
    return cell_id(d), fp_cache_dir(d).name


def changed(value, path: str):
    """A different value of the same kind."""
    if path.endswith("_target_"):
        return OTHER_TARGET.get(value, "qbench.quant.schemes.NoQuant")
    if isinstance(value, bool):
        return not value
    if isinstance(value, int | float):
        return value + 1
    if isinstance(value, str):
        return value + "_x"
    if isinstance(value, list):
        return [*value, "x"]
    return {"x": 1} if isinstance(value, dict) else "x"


def with_value(d: dict, path: str, value) -> dict:
    d = copy.deepcopy(d)
    *parents, last = path.split(".")
    node = d
    for p in parents:
        node = node[p]
    node[last] = value
    return d


@pytest.mark.parametrize("overrides", OVERRIDES, ids=lambda o: ",".join(o) or "default")
def test_every_key_is_in_the_identity_or_deliberately_excluded(overrides):
    d = task_overrides(composed(*overrides))  # as the cell runs: train.tasks[<task>] merged (tests/test_pipeline.py)
    base = keys(d)
    skip = [*EXCLUDED, *unused(d, d["scheme"]["_target_"].endswith("NoQuant"))]
    missing, fp_missing, fp_extra = [], [], []
    for path, value in flatten(d).items():
        if under(path, skip):
            continue
        cid, fp = keys(with_value(d, path, changed(value, path)))
        missing += [path] if cid == base[0] else []
        if under(path, (*QUANT_STAGE, *BOOKKEEPING)):
            fp_extra += [path] if fp != base[1] else []
        else:
            fp_missing += [path] if fp == base[1] else []
    assert not missing, f"keys that change nothing in the cell id; add them or list them in EXCLUDED: {missing}"
    assert not fp_missing, f"keys missing from the FP cache key: {fp_missing}"
    assert not fp_extra, f"quantization-stage keys in the FP cache key: {fp_extra}"


def ids(*overrides: str) -> tuple[str, str]:
    return keys(composed(*overrides))


def test_qat_stage_overrides_and_distillation_weights():
    base = ids()
    qat = ids("++train.qat.lr=1e-5")
    assert qat[0] != base[0] and qat[1] == base[1]  # a QAT-stage override: a new cell, the same FP model
    assert ids("distill.kd_weight=0.5")[0] != base[0]  # distill=none with a kd weight is distillation after all
    assert ids("distill.task_weight=3")[0] == base[0]  # inactive distillation settings change nothing
    assert ids("scheme=none", "bits=3") == ids("scheme=none", "bits=5")


@pytest.mark.parametrize("task", ["rte", "wikitext2"])
def test_local_data_and_hub_are_different_cells(task):
    local, hub = ids(f"task={task}"), ids(f"task={task}", "data_dir=null")
    assert local[0] != hub[0] and local[1] != hub[1]


def test_data_are_identified_by_content_not_path(tmp_path):
    shutil.copytree(DATA / "glue" / "rte", tmp_path / "glue" / "rte")
    shared, copied = ids("task=rte"), ids("task=rte", f"data_dir={tmp_path}")
    assert copied == shared  # the same files at another path
    f = tmp_path / "glue" / "rte" / "validation.parquet"
    b = bytearray(f.read_bytes())
    b[len(b) // 2] ^= 1  # same size, one bit different
    f.write_bytes(bytes(b))
    assert ids("task=rte", f"data_dir={tmp_path}")[0] != shared[0]
    (tmp_path / "glue" / "rte" / "train.parquet").unlink()
    assert ids("task=rte", f"data_dir={tmp_path}")[0] != shared[0]
    folder = ids("task=rte", "data_dir=null", f"task.data_dir={DATA / 'glue' / 'rte'}")
    assert folder == shared  # the same files given as the task's own folder


def test_kmeans_granularity_keeps_paper_a_ids():
    """granularity/group_size and weighting/calib_batches came later: paper A's k-means (granularity=tensor,
    weighting=none) hashes exactly as before them (the id below was computed with the code before them, on the shared
    data mirror); row, group and fisher are new cells."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.create(composed("model=minilm", "task=sst2", "scheme=kmeans", "bits=2", "train=cpu"))
    assert cell_id(cfg) == "minilm-sst2-kmeans-b2-s42-66e1c9df"
    assert ids("scheme=kmeans", "scheme.group_size=64") == ids("scheme=kmeans")  # read by granularity=group only
    row, group = ids("scheme=kmeans", "scheme.granularity=row"), ids("scheme=kmeans", "scheme.granularity=group")
    assert len({row[0], group[0], ids("scheme=kmeans")[0]}) == 3
    assert ids("scheme=kmeans", "scheme.granularity=group", "scheme.group_size=64")[0] != group[0]
    assert ids("scheme=kmeans", "scheme.calib_batches=4") == ids("scheme=kmeans")  # read by weighting=fisher only
    fisher = ids("scheme=kmeans", "scheme.weighting=fisher")
    assert fisher[0] != ids("scheme=kmeans")[0]
    assert ids("scheme=kmeans", "scheme.weighting=fisher", "scheme.calib_batches=4")[0] != fisher[0]
