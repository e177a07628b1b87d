"""Studies: stable cell ids, resume after a kill, force; launchers and experiments compose; the submitit launcher
runs a sweep."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hydra import compose, initialize_config_module

from qbench.sweep import cell_id
from tests.conftest import DATA, REPO, qbench, qbench_cmd, qbench_env, read_record

DEBUG = ["train=debug", "train.max_eval_examples=32", "model=tiny_bert", "task=wnli"]


def ids(*override_sets):
    with initialize_config_module("qbench.conf", version_base="1.3"):
        return [cell_id(compose("config", overrides=list(o))) for o in override_sets]


def test_cell_id_is_stable_and_tracks_what_changes_results():
    a, a2, b, c, d = ids([], [], ["bits=3"], ["train.lr=1e-4"], ["device=cpu", "force=true", "save_predictions=false"])
    assert a == a2 and a.startswith("minilm-sst2-kmeans-b2-s42-")
    assert len({a, b, c}) == 3  # bits and training settings change the cell
    assert a == d  # where and how results are written does not
    none2, none8 = ids(["scheme=none", "bits=2"], ["scheme=none", "bits=8"])
    assert none2 == none8 and "-none-s42-" in none2  # a full-precision cell ignores bits


def test_killed_sweep_reruns_only_missing_cells(tmp_path):
    args = ["run", "-m", *DEBUG, "scheme=linear", "bits=1,2,3,4", f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.Popen(qbench_cmd(*args), env=qbench_env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.time() + 300
    while len(list(tmp_path.glob("*/record.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # mid-sweep: two cells done, the third under way
    proc.wait()
    before = {f.parent.name: f.read_text() for f in tmp_path.glob("*/record.json")}
    assert 2 <= len(before) < 4
    p = qbench(*args, fresh=True)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.count("skip (completed)") == len(before)
    after = {f.parent.name: f.read_text() for f in tmp_path.glob("*/record.json")}
    assert len(after) == 4 and all(after[k] == v for k, v in before.items())  # done cells untouched
    records = [json.loads(v) for v in after.values()]
    assert sorted(r["scheme"]["bits"] for r in records) == [1, 2, 3, 4]
    assert all(r["status"] == "completed" for r in records)
    assert not [f for f in tmp_path.rglob("*.tmp")]  # no half-written record left behind


def test_force_reruns_a_completed_cell(tmp_path):
    args = ["run", *DEBUG, "scheme=linear", "bits=2", f"hydra.run.dir={tmp_path}"]
    assert qbench(*args).returncode == 0
    first = read_record(tmp_path)["finished"]
    assert "skip (completed)" in qbench(*args).stdout
    time.sleep(1)
    assert qbench(*args, "force=true").returncode == 0
    assert read_record(tmp_path)["finished"] != first


def test_launchers_and_experiments_compose():
    with initialize_config_module("qbench.conf", version_base="1.3"):
        local = compose("config", overrides=["hydra/launcher=local_parallel"], return_hydra_config=True)
        assert local.hydra.launcher._target_.endswith("JoblibLauncher") and local.hydra.launcher.n_jobs == 2
        slurm = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
                        return_hydra_config=True)  # fmt: skip
        assert slurm.hydra.launcher._target_.endswith("SlurmLauncher") and slurm.hydra.launcher.gpus_per_node == 1
        cpu = compose("config", overrides=["+experiment=paper_a_glue_cpu"], return_hydra_config=True)
        grid = {k: v.split(",") for k, v in cpu.hydra.sweeper.params.items()}
        assert cpu.model.name == "minilm" and cpu.train.order == "ft_then_qat" and cpu.study == "paper_a_glue_cpu"
        assert cpu.train.qat.epochs == 1 and cpu.train.qat.max_train_examples == 2000
        assert grid == {"task": ["sst2", "mrpc", "rte", "cola", "stsb"], "bits": ["1", "2", "3", "4"],
                        "scheme": ["none", "linear", "linear_row", "kmeans"]}  # fmt: skip
        full = compose("config", overrides=["+experiment=paper_a_glue"], return_hydra_config=True)
        params = full.hydra.sweeper.params
        assert len(params.task.split(",")) == 9 and params.bits == "1,2,3,4,5,6,7,8"


def test_paper_b_cpu_experiments_compose_to_valid_cells():
    """Every cell of the CPU paper B grids builds its scheme (2-2-8) and distillation spec."""
    from qbench.cell import build_scheme
    from qbench.distill import DistillSpec

    with initialize_config_module("qbench.conf", version_base="1.3"):
        for name, model, task, order in [("paper_b_minilm_cpu", "minilm", "sst2", "ft_then_qat"),
                                         ("paper_b_cpu", "smollm2", "ptb", "qat")]:  # fmt: skip
            exp = compose("config", overrides=[f"+experiment={name}"], return_hydra_config=True)
            assert (exp.model.name, exp.task.name, exp.train.order) == (model, task, order)
            grid = {k: v.split(",") for k, v in exp.hydra.sweeper.params.items()}
            assert {"pact", "lsq", "mds"} <= set(grid["scheme"])
            for scheme in grid["scheme"]:
                for distill in grid.get("distill", ["none"]) + ["kd_tcd"]:
                    cfg = compose("config", overrides=[f"+experiment={name}", f"scheme={scheme}", f"distill={distill}"])
                    assert build_scheme(cfg).wea == "2-2-8"  # (SmolLM2's weights are an optional package)
                    assert DistillSpec.from_config(cfg.distill).active == (distill != "none")


def test_parallel_launcher_runs_cells(tmp_path):
    p = qbench("run", "-m", "hydra/launcher=local_parallel", *DEBUG, "scheme=linear", "bits=2,4",
               f"hydra.sweep.dir={tmp_path}", fresh=True)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    assert sorted(read_record(f.parent)["scheme"]["bits"] for f in tmp_path.glob("*/record.json")) == [2, 4]


def test_a_cells_user_error_is_recorded_and_the_sweep_goes_on(tmp_path, data_dir):
    # the local mirror has no QQP validation split: that cell fails, RTE still runs
    p = qbench("run", "-m", "train=debug", "train.max_eval_examples=16", "model=tiny_bert", "task=rte,qqp",
               "train.order=zeroshot", f"hydra.sweep.dir={tmp_path}", fresh=True)  # fmt: skip
    assert p.returncode == 0, p.stderr[-2000:]
    records = {r["task"]: r for r in (json.loads(f.read_text()) for f in tmp_path.glob("*/record.json"))}
    assert records["rte"]["status"] == "completed"
    assert records["qqp"]["status"] == "failed" and "qqp/validation.parquet" in records["qqp"]["error"]
    assert records["qqp"]["cell_id"].startswith("tiny_bert-qqp-kmeans-b2-s42-")


def test_per_tensor_bits_keep_old_ids_and_their_order_counts():
    """scheme.bits_by and scheme.only came later: unset (or empty) they leave every id as it was; set, they make a new
    cell, and since the first matching pattern wins, their order is part of it. model.groups (read by qbench
    sensitivity only) is not in the id either."""
    from omegaconf import OmegaConf

    cpu = ["train=cpu", f"data_dir={DATA}"]
    base, empty, groups = ids(cpu, [*cpu, "+scheme.bits_by={}"], [*cpu, "~model.groups"])
    assert base == empty == groups == "minilm-sst2-kmeans-b2-s42-66e1c9df"  # as tests/test_identity.py pins it
    ab, ba, only = ids(["+scheme.bits_by={*.layer.0.*:3,*.layer.*:4}"], ["+scheme.bits_by={*.layer.*:4,*.layer.0.*:3}"],
                       ["+scheme.only=[*.layer.0.*]"])  # fmt: skip
    assert len({base, ab, ba, only}) == 4
    with initialize_config_module("qbench.conf", version_base="1.3"):
        cfg = compose("config", overrides=["+scheme.bits_by={*.layer.0.*:3,*.layer.*:4}"])
    assert list(OmegaConf.to_container(cfg.scheme.bits_by)) == ["*.layer.0.*", "*.layer.*"]


@pytest.mark.skipif(sys.platform == "win32", reason="submitit's local executor starts POSIX processes")
def test_submitit_launcher_runs_a_sweep_for_real(tmp_path):
    """The cluster path, run: the submitit launcher that SLURM sweeps use (hydra/launcher=slurm), here with
    submitit's local executor (hydra/launcher=submitit_local): each cell a pickled job in its own process, then
    the study's table."""
    args = ["run", "-m", "hydra/launcher=submitit_local", *DEBUG, "train.order=zeroshot", "scheme=linear", "bits=2,4",
            f"hydra.sweep.dir={tmp_path}"]  # fmt: skip
    p = qbench(*args, fresh=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    print(p.stdout)
    records = [json.loads(f.read_text()) for f in sorted(tmp_path.glob("*/record.json"))]
    assert [(r["status"], r["scheme"]["bits"]) for r in records] == [("completed", 2), ("completed", 4)]
    assert "Submitit 'local' sweep output dir" in p.stdout
    assert len([f for f in (tmp_path / ".submitit").rglob("*_result.pkl")]) == 2  # both ran as submitit jobs
    assert "| linear 2b" in p.stdout and "| linear 4b" in p.stdout  # the table of the study


def test_a_null_quantizer_lr_keeps_the_committed_cell_ids(data_dir):
    """train.qat.quantizer_lr came after these records: at its default (null) their ids are unchanged; set, it
    makes another cell."""
    records = [json.loads(f.read_text()) for f in sorted((REPO / "results/paper_b_smollm2").glob("*/record.json"))]
    assert len(records) >= 10
    for r in records:
        c = {**r["config"], "data_dir": str(data_dir)}  # local data are identified by content, not path
        assert "quantizer_lr" not in c["train"]["qat"]
        c["train"]["qat"]["quantizer_lr"] = None
        assert cell_id(c) == r["cell_id"]
        c["train"]["qat"]["quantizer_lr"] = 0.01
        assert cell_id(c) != r["cell_id"]


def test_issue_26_experiments_compose_to_valid_cells():
    """paper_b_glue_cpu (MiniLM 2-2-8 on SST-2 and STS-B) starts from train=cpu's cached FP fine-tune;
    paper_b_smollm2_qlr trains 4x paper_b_smollm2's 25 QAT steps, each block once; both take a quantizer_lr for
    pact/lsq/mds only."""
    import pytest

    from qbench.cell import build_scheme, check_combinations
    from qbench.config import typed_config
    from qbench.distill import DistillSpec
    from qbench.errors import QbenchError
    from qbench.fp_cache import fp_cache_dir

    with initialize_config_module("qbench.conf", version_base="1.3"):
        glue = compose("config", overrides=["+experiment=paper_b_glue_cpu"], return_hydra_config=True)
        grid = {k: v.split(",") for k, v in glue.hydra.sweeper.params.items()}
        assert grid == {"task": ["sst2", "stsb"], "scheme": ["pact", "lsq", "laq", "mds"],
                        "distill": ["none", "kd", "tcd", "kd_tcd"], "seed": ["42", "1", "2"]}  # fmt: skip
        for task in grid["task"]:  # the FP fine-tune of paper A's CPU study (train=cpu): the same cache entry
            fp = compose("config", overrides=["+experiment=paper_a_glue_cpu", "scheme=none", f"task={task}"])
            cell = compose("config", overrides=["+experiment=paper_b_glue_cpu", f"task={task}", "scheme=mds",
                                                "distill=kd_tcd", "train.qat.quantizer_lr=0.01"])  # fmt: skip
            assert fp_cache_dir(cell) == fp_cache_dir(fp)
        lm = compose("config", overrides=["+experiment=paper_b_smollm2_qlr"], return_hydra_config=True)
        assert lm.train.qat.max_steps >= 4 * 25 and lm.train.qat.max_steps * lm.train.batch_size <= (
            lm.train.qat.max_train_examples)  # fmt: skip
        for name, wea in (("paper_b_glue_cpu", "2-2-8"), ("paper_b_smollm2_qlr", "4-4-8")):
            for scheme in ("pact", "lsq", "laq", "mds"):
                over = [f"+experiment={name}", f"scheme={scheme}", "distill=kd_tcd", "train.qat.quantizer_lr=0.01"]
                cfg = compose("config", overrides=over)
                s, c, d = build_scheme(cfg), typed_config(cfg), DistillSpec.from_config(cfg.distill)
                assert s.wea == wea and d.active
                if scheme == "laq":  # LAQ fits its range: nothing to train at a rate of its own
                    with pytest.raises(QbenchError, match="quantizer_lr"):
                        check_combinations(s, c.train, d)
                else:
                    check_combinations(s, c.train, d)
