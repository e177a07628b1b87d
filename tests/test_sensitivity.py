"""Sensitivity groups (model yaml data) partition the quantized weights; `qbench sensitivity` then `qbench allocate`
run end to end on a tiny model, and the allocation's command runs the mixed-precision cell."""

import fnmatch
import json
import shlex

import pytest
import yaml
from hydra import compose, initialize_config_module

from qbench.errors import QbenchError
from qbench.sensitivity import check_partition, expand, model_groups, partition, sweeps
from tests.conftest import qbench, read_record


def model_node(*overrides):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides)).model


@pytest.mark.parametrize("model,count,names", [
    ("minilm", 13, ["embed", "attn0", "attn5", "ffn0", "ffn5"]),
    ("smollm2", 61, ["embed", "attn0", "attn29", "mlp0", "mlp29"]),
])  # fmt: skip
def test_groups_partition_the_quantized_weights(model, count, names):
    """Checked on the full-size shape's parameter names (meta device): every quantized weight in exactly one group;
    SmolLM2's embedding and its tied LM head are one tensor, one group."""
    node = model_node(f"model={model}")
    groups = model_groups(node)
    assert len(groups) == count and set(names) <= set(groups)
    check_partition(node)


def test_expand_and_partition_errors():
    assert expand({"e": ["*emb*"], "l{i}": ["*.{i}.a*", "*.{i}.b*"]}, 2) == {
        "e": ["*emb*"], "l0": ["*.0.a*", "*.0.b*"], "l1": ["*.1.a*", "*.1.b*"]}  # fmt: skip
    with pytest.raises(QbenchError, match="must be in the name and in every pattern"):
        expand({"l{i}": ["*.a*"]}, 2)
    with pytest.raises(QbenchError, match=r"x.a.w is in 2 sensitivity groups \['a', 'b'\]"):
        partition(["x.a.w"], {"a": ["*.a.*"], "b": ["x.*"]})
    with pytest.raises(QbenchError, match="x.c.w is in 0 sensitivity groups"):
        partition(["x.c.w"], {"a": ["*.a.*"]})
    with pytest.raises(QbenchError, match="has no sensitivity groups"):
        model_groups(model_node("model=bert"))


def test_the_two_sweeps():
    """The FP cell drops every scheme setting; the grid sweeps groups (scheme.only) x bits, post-training."""
    args = ["model=minilm", "train=cpu", "scheme=kmeans", "scheme.granularity=row", "bits=2,3"]
    fp, grid = sweeps(args, {"a": ["*.a.*"], "b": ["*.b.*", "*.c.*"]}, "s")
    assert fp == ["model=minilm", "train=cpu", "train.order=ptq", "study=s", "scheme=none"]
    assert grid == ["model=minilm", "train=cpu", "scheme=kmeans", "scheme.granularity=row", "train.order=ptq",
                    "study=s", "bits=2,3", "+scheme.only=[*.a.*],[*.b.*,*.c.*]"]  # fmt: skip
    assert sweeps(["train.order=zeroshot"], {"a": ["*"]}, "s")[1][:2] == ["train.order=zeroshot", "study=s"]
    with pytest.raises(QbenchError, match="sensitivity cells are post-training"):
        sweeps(["train.order=qat"], {"a": ["*"]}, "s")


def test_sensitivity_then_allocate_then_the_mixed_cell(tmp_path, data_dir):
    """A one-layer tiny BERT (3 groups) at 2 and 4 bits: the FP cell and 6 PTQ cells from one FP fine-tune; the
    allocation meets the budget, and its command runs the mixed cell with each group at its bits."""
    sweep = tmp_path / "sens"
    args = ["model=tiny_bert", "model.config.num_hidden_layers=1", "task=rte", "train=debug",
            "train.max_eval_examples=16", "scheme=linear", "bits=2,4", f"hydra.sweep.dir={sweep}"]  # fmt: skip
    p = qbench("sensitivity", *args)
    assert p.returncode == 0, p.stderr[-3000:]
    records = [json.loads(f.read_text()) for f in sweep.glob("*/record.json")]
    assert sorted((r["scheme"]["name"], r["scheme"].get("bits")) for r in records) == [
        ("linear", 2)] * 3 + [("linear", 4)] * 3 + [("none", None)]  # fmt: skip
    assert all(r["status"] == "completed" and r["order"] == "ptq" for r in records)
    cached = [r["training"]["full_precision"]["cached"] for r in records]
    assert cached.count(None) == 1 and len(set(cached) - {None}) == 1  # one FP fine-tune, then its cache
    only = {tuple(r["config"]["scheme"]["only"]) for r in records if r["scheme"].get("only")}
    assert only == {("*.embeddings.*",), ("*.encoder.layer.0.attention.*",),
                         ("*.encoder.layer.0.intermediate.*", "*.encoder.layer.0.output.*")}  # fmt: skip
    assert qbench("sensitivity", *args).stdout.count("skip (completed)") == 7  # resumable: nothing reruns

    out = tmp_path / "alloc.yaml"
    p = qbench("allocate", str(sweep), "--budget", "3.0", "--out", str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    assert "embed" in p.stdout and "average code bits" in p.stdout
    command = p.stdout.strip().splitlines()[-1].strip()
    assert command.startswith("qbench run model=tiny_bert model.config.num_hidden_layers=1 task=rte train=debug")
    assert "bits_by" in out.read_text() and out.read_text().startswith("# @package _global_")

    run = shlex.split(command)[2:]  # the printed command, as the shell splits it
    p = qbench("run", *run, f"hydra.run.dir={tmp_path / 'mixed'}")
    assert p.returncode == 0, p.stderr[-3000:]
    r = read_record(tmp_path / "mixed")
    allocation = yaml.safe_load(out.read_text())["scheme"]["bits_by"]
    assert r["scheme"]["bits_by"] == allocation and r["order"] == "ptq"
    for layer in r["scheme"]["layers"]:  # each weight at its group's bits
        assert layer["bits"] == next(b for p, b in allocation.items() if fnmatch.fnmatchcase(layer["name"], p))
    code = sum(layer["bits"] * layer["numel"] for layer in r["scheme"]["layers"])
    assert code / r["scheme"]["quantized_params"] <= 3.0  # the budget, in code bits


def test_user_errors_exit_2_before_any_cell(tmp_path):
    p = qbench("sensitivity", "scheme=none", f"hydra.sweep.dir={tmp_path}")
    assert p.returncode == 2 and "scheme=none quantizes nothing" in p.stderr
    p = qbench("sensitivity", "model=bert", f"hydra.sweep.dir={tmp_path}")
    assert p.returncode == 2 and "model=bert has no sensitivity groups" in p.stderr
    assert not list(tmp_path.iterdir())
