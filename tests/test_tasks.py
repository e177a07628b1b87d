import numpy as np
import pytest
from hydra import compose, initialize_config_module
from omegaconf import OmegaConf

from qbench.errors import QbenchError
from qbench.overrides import conf_dir, options
from qbench.tasks import TaskSpec

GLUE = ["cola", "mnli", "mrpc", "qnli", "qqp", "rte", "sst2", "stsb", "wnli"]


def spec(**kw):
    base = dict(name="t", metrics=("accuracy",), main_metric="accuracy", eval_splits=("validation",),
                text_fields=("sentence",))  # fmt: skip
    return TaskSpec(**{**base, **kw})


def test_all_nine_glue_tasks_are_valid_specs():
    assert all(t in options("task") for t in GLUE)
    with initialize_config_module("qbench.conf", version_base="1.3"):
        for name in GLUE:
            cfg = compose("config", overrides=[f"task={name}"])
            task = TaskSpec.from_config(OmegaConf.to_container(cfg.task, resolve=True))
            assert task.name == name and task.main_metric in task.metrics
    mnli = TaskSpec.from_config(OmegaConf.load(conf_dir() / "task" / "mnli.yaml"))
    assert mnli.eval_splits == ("validation_matched", "validation_mismatched") and mnli.num_labels == 3


def test_metrics_match_hand_computation():
    y, p = np.array([1, 1, 0, 0, 1]), np.array([1, 0, 0, 1, 1])
    m = spec(metrics=("accuracy", "f1", "matthews")).compute_metrics(y, p)
    assert m["accuracy"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))  # tp=2, fp=1, fn=1
    assert m["matthews"] == pytest.approx((2 * 1 - 1 * 1) / np.sqrt(3 * 3 * 2 * 2))
    r = spec(metrics=("pearson", "spearman"), main_metric="pearson", num_labels=1)
    out = r.compute_metrics(np.array([0.0, 1.0, 2.0, 3.0]), np.array([0.0, 2.0, 4.0, 7.0]))
    assert out["spearman"] == pytest.approx(1.0) and 0.98 < out["pearson"] < 1.0


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(metrics=("bleu",)), "unknown metric"),
        (dict(main_metric="f1"), "main_metric"),
        (dict(text_fields=()), "text_fields"),
    ],
)
def test_invalid_specs_are_rejected(bad, match):
    with pytest.raises(QbenchError, match=match):
        spec(**bad)


def test_unknown_task_key_rejected():
    with pytest.raises(QbenchError, match="unknown key"):
        TaskSpec.from_config({"name": "x", "metrics": ["accuracy"], "main_metric": "accuracy",
                              "eval_splits": ["validation"], "colour": "blue"})  # fmt: skip


def test_a_yaml_null_in_lm_or_generation_means_the_one_default():
    from qbench.config import GenerationSchema, LmSchema

    ptb = TaskSpec.from_config(OmegaConf.load(conf_dir() / "task" / "ptb.yaml"))
    assert ptb.lm == LmSchema(batch_tokens=8192) and ptb.lm.context_length is None
    xsum = TaskSpec.from_config(
        {**OmegaConf.load(conf_dir() / "task" / "xsum.yaml"), "generation": {"num_beams": None, "samples": 2}}
    )
    assert xsum.generation == GenerationSchema(samples=2) and xsum.generation.num_beams == 4
